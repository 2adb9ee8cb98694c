"""The tenant's ``list_unsubscribe`` setting (``tenants.list_unsubscribe``, read by notify):
its own unsubscribe endpoint, which notify then puts in every notification of the tenant as
``List-Unsubscribe`` (and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` when there is
an https URL), both signed.

Off by default, on purpose: a notification is one-to-one transactional mail ("Alice sent you a
secure message"), not a list; an unsubscribe button next to it invites recipients to switch
off mail they need, and mailbox providers require the headers only of bulk and marketing mail
(docs/deliverability.md). A tenant whose notifications are more than that turns it on.

Checked at save with the rule notify applies again when it writes the header
(``secmsg.shared.headers``): an ``https:`` URL and/or a ``mailto:`` URI, printable ASCII
without spaces, commas or angle brackets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from secmsg.ingest import audit
from secmsg.ingest.ports import AccessRepo, Credentials, EventSink, Origin
from secmsg.shared.errors import InvalidInput
from secmsg.shared.headers import UNSUBSCRIBE_MAILTO, UNSUBSCRIBE_URL


def view(tenant: dict[str, Any]) -> dict[str, Any]:
    value = tenant.get("list_unsubscribe")
    value = value if isinstance(value, dict) else {}
    url, mailto = value.get("url"), value.get("mailto")
    return {"enabled": bool(url or mailto), "url": url, "mailto": mailto,
            "one_click": bool(url), "updated_at": value.get("updated_at")}


async def put(*, creds: Credentials, url: str | None, mailto: str | None, repo: AccessRepo,
              events: EventSink, origin: Origin, now: datetime) -> dict[str, Any]:
    """Replace the setting; at least one of ``url`` and ``mailto``."""
    url, mailto = (url or "").strip() or None, (mailto or "").strip() or None
    if url is None and mailto is None:
        raise InvalidInput("give url and/or mailto (DELETE turns List-Unsubscribe off)")
    if url is not None and not UNSUBSCRIBE_URL.match(url):
        raise InvalidInput("url must be an https:// URL of printable ASCII without spaces, "
                           "commas or angle brackets (at most 508 characters)")
    if mailto is not None and not UNSUBSCRIBE_MAILTO.match(mailto):
        raise InvalidInput("mailto must be a mailto: URI of printable ASCII without spaces, "
                           "commas or angle brackets (at most 307 characters)")
    value: dict[str, Any] = {"updated_at": now, "updated_by": creds.actor}
    if url is not None:
        value["url"] = url
    if mailto is not None:
        value["mailto"] = mailto
    tenant_id = creds.tenant.tenant_id
    await repo.set_fields(tenant_id, {"list_unsubscribe": value})
    await audit.record(events=events, creds=creds, action="list_unsubscribe.changed",
                       origin=origin, detail={"change": "set", "one_click": str(url is not None)
                                              .lower()})
    return view({"list_unsubscribe": value})


async def delete(*, creds: Credentials, repo: AccessRepo, events: EventSink,
                 origin: Origin) -> None:
    """Back to the default: no List-Unsubscribe (idempotent)."""
    await repo.set_fields(creds.tenant.tenant_id, {}, unset=("list_unsubscribe",))
    await audit.record(events=events, creds=creds, action="list_unsubscribe.changed",
                       origin=origin, detail={"change": "removed"})
