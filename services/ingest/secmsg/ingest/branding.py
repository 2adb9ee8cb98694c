"""The tenant's look in notifications, code emails and the Secure Message Center: display
name, footer, legal disclaimers, logo and colour (``tenants.display_name``, ``footer``,
``disclaimers``, ``branding``; read by notify, retrieve and the webmail).

Checked at save so a reader never meets a value it cannot use: the display name goes into the
notification's From header (no CR, LF or NUL), the logo is an ``https:`` URL or a small
``data:image/(png|jpeg|gif)`` (the webmail shows only ``data:`` or same-origin logos, mail
clients fetch ``https:``), the colour is ``#rrggbb`` with at least 4.5:1 contrast against
white (WCAG AA; ``secmsg.shared.colours``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from secmsg.ingest import audit
from secmsg.ingest.ports import AccessRepo, Credentials, EventSink, Origin
from secmsg.shared.colours import brand_colour_problem
from secmsg.shared.errors import InvalidInput
from secmsg.shared.headers import check_header_value

MAX_LOGO_DATA_URL = 64 * 1024
_DATA_LOGO = re.compile(r"^data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=]+$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class BrandingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, min_length=1, max_length=100,
                                     examples=["ABC Medical"])
    footer: str | None = Field(default=None, max_length=500, examples=[
        "Sent by ABC Medical of 123 ABC Street Beverly Hills, CA 90210, Call: (555) 555-7323"])
    disclaimers: list[str] | None = Field(default=None, max_length=10, examples=[
        ["This message is confidential and intended only for the named recipients."]])
    logo_url: str | None = Field(default=None, max_length=MAX_LOGO_DATA_URL,
                                 examples=["https://www.abc-medical.example/logo.png"])
    primary_color: str | None = Field(default=None, examples=["#0b5394"])


def view(tenant: dict[str, Any]) -> dict[str, Any]:
    branding = tenant.get("branding") or {}
    return {"display_name": tenant.get("display_name") or tenant.get("name") or tenant["_id"],
            "footer": tenant.get("footer"),
            "disclaimers": list(tenant.get("disclaimers") or []),
            "logo_url": branding.get("logo_url"),
            "primary_color": branding.get("primary_color")}


def _check_logo(url: str) -> None:
    if url.startswith("data:"):
        if not _DATA_LOGO.match(url):
            raise InvalidInput("logo_url: a data: logo must be data:image/png, jpeg or gif "
                               "in base64")
        return
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or len(url) > 2048:
        raise InvalidInput("logo_url must be an https:// URL (at most 2048 characters) or a "
                           "data:image URL")
    check_header_value("logo_url", url)


async def put(*, creds: Credentials, body: BrandingIn, raw: dict[str, Any], repo: AccessRepo,
              events: EventSink, origin: Origin) -> dict[str, Any]:
    """Fields left out stay; an explicit null clears footer, logo and colour."""
    fields: dict[str, Any] = {}
    unset: list[str] = []
    if "display_name" in raw:
        if not body.display_name or not body.display_name.strip():
            raise InvalidInput("display_name cannot be empty")
        check_header_value("display_name", body.display_name)
        fields["display_name"] = body.display_name.strip()
    if "footer" in raw:
        if body.footer and body.footer.strip():
            fields["footer"] = body.footer.strip()
        else:
            unset.append("footer")
    if "disclaimers" in raw:
        items = [d.strip() for d in body.disclaimers or []]
        if any(not d or len(d) > 2000 for d in items):
            raise InvalidInput("each disclaimer must be 1 to 2000 characters")
        fields["disclaimers"] = items
    if "logo_url" in raw:
        if body.logo_url:
            _check_logo(body.logo_url)
            fields["branding.logo_url"] = body.logo_url
        else:
            unset.append("branding.logo_url")
    if "primary_color" in raw:
        if body.primary_color:
            if not _COLOUR.match(body.primary_color):
                raise InvalidInput("primary_color must be #rrggbb")
            if (problem := brand_colour_problem(body.primary_color)) is not None:
                raise InvalidInput(problem)
            fields["branding.primary_color"] = body.primary_color.lower()
        else:
            unset.append("branding.primary_color")
    if not fields and not unset:
        raise InvalidInput("nothing to change: give at least one field")
    tenant_id = creds.tenant.tenant_id
    await repo.set_fields(tenant_id, fields, unset=tuple(unset))
    await audit.record(events=events, creds=creds, action="branding.changed", origin=origin,
                       detail={"fields": ",".join(sorted(
                           {f.split(".")[-1] for f in [*fields, *unset]}))})
    return view(await repo.tenant(tenant_id))
