"""MongoDB adapter (read-only): tenant branding, templates, SMTP and DKIM settings; the
``undeliverable`` list; the platform relay choice in ``dnsbl_status``. The delivery claims
live in NATS KV (kv.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from secmsg.notify.alignment import tenant_bounce_domain
from secmsg.notify.ports import DkimKey, SmtpTarget, TenantBranding
from secmsg.shared import crypto, mongo, templating
from secmsg.shared.documents import ReadView, TenantDoc, UndeliverableDoc
from secmsg.shared.errors import SecmsgError
from secmsg.shared.headers import UNSUBSCRIBE_MAILTO, UNSUBSCRIBE_URL
from secmsg.shared.tenant_cache import TenantCache, TenantChanges

log = logging.getLogger(__name__)

# Must match ``secmsg.ingest.tenant_smtp.SECRET_PURPOSE`` (the AAD the password is sealed with).
SMTP_SECRET_PURPOSE = crypto.SMTP_PASSWORD_PURPOSE


@dataclass(frozen=True)
class TenantSmtpOptions:
    """How a tenant's own SMTP target is built: the allow-list for the SSRF guard, extra CAs,
    the timeout, and how to open the sealed password (``KeyRing.open_secret``; only called when
    a tenant has one, so notify needs the keyring only then)."""

    allowed_targets: str = ""
    ca_file: str | None = None
    timeout_s: float = 30.0
    open_secret: Callable[[str, str, str], str] | None = None


class MongoTenantDirectory:
    """Tenant display name, footer, disclaimers, templates, SMTP and DKIM settings, cached
    per tenant (``changes``: dropped as soon as ``tenant.changed`` says the tenant changed,
    else kept ``ttl_s`` at most; not cached while that listener is not running)."""

    def __init__(self, db: AsyncDatabase[Any], *, ttl_s: float = 60.0,
                 smtp: TenantSmtpOptions | None = None, changes: TenantChanges | None = None,
                 max_entries: int = 10_000, bounce_subdomain: str | None = None) -> None:
        self._tenants = ReadView(db, TenantDoc)
        self._bounce_subdomain = bounce_subdomain
        self._smtp = smtp or TenantSmtpOptions()
        self._cache: TenantCache[str, TenantBranding] = (changes or TenantChanges()).cache(
            "notify_tenants", max_entries=max_entries, ttl_s=ttl_s)

    async def branding(self, tenant_id: str) -> TenantBranding:
        hit = self._cache.get(tenant_id)
        if hit is not None:
            return hit
        doc = await self._tenants.get(tenant_id, ["name", "display_name", "footer",
                                                  "disclaimers", "templates", "branding",
                                                  "smtp", "dkim", "list_unsubscribe"])
        doc = doc or TenantDoc.model_validate({"_id": tenant_id})
        branding = TenantBranding(
            tenant_id=tenant_id,
            display_name=doc.shown_name(),
            footer=doc.footer or None,
            disclaimers=tuple(d for d in doc.disclaimers if d),
            logo_url=doc.branding.logo_url or None,
            templates={kind: t.source for kind, t in doc.templates.items()
                       if kind in templating.KINDS},
            smtp=self._tenant_smtp(tenant_id, doc.smtp),
            dkim=self._tenant_dkim(tenant_id, doc.dkim),
            **_list_unsubscribe(tenant_id, doc.list_unsubscribe),
        )
        self._cache.put(tenant_id, tenant_id, branding)
        return branding

    def _tenant_dkim(self, tenant_id: str, value: Any) -> DkimKey | None:
        if not isinstance(value, dict):
            return None
        domain, selector = value.get("domain"), value.get("selector")
        sealed, from_address = value.get("private_key_sealed"), value.get("from_address")
        if not (isinstance(domain, str) and isinstance(selector, str) and domain and selector
                and isinstance(sealed, str) and self._smtp.open_secret is not None):
            return None
        try:
            pem = self._smtp.open_secret(tenant_id, crypto.DKIM_KEY_PURPOSE, sealed)
        except (SecmsgError, ValueError):
            # The platform key signs instead (and From stays the platform's): still delivered.
            log.warning("tenant DKIM key does not open", extra={"tenant_id": tenant_id})
            return None
        return DkimKey(domain=domain, selector=selector, private_key_pem=pem.encode(),
                       from_address=from_address if isinstance(from_address, str)
                       and from_address else None,
                       bounce_domain=tenant_bounce_domain(self._bounce_subdomain, domain))

    def _tenant_smtp(self, tenant_id: str, value: Any) -> SmtpTarget | None:
        if not isinstance(value, dict) or value.get("mode") != "own":
            return None
        host, port, tls = value.get("host"), value.get("port"), value.get("tls")
        if not isinstance(host, str) or not isinstance(port, int) or tls not in ("starttls",
                                                                               "tls"):
            # Never fall back to plaintext or to another server: an unusable selection fails.
            log.warning("tenant SMTP selection is incomplete", extra={"tenant_id": tenant_id})
            return SmtpTarget(host=str(host or "invalid."), port=int(port or 25), tls="tls",
                              timeout_s=self._smtp.timeout_s, checked=True,
                              allowed_targets=self._smtp.allowed_targets)
        username = value.get("username") or None
        password: str | None = None
        sealed = value.get("password_sealed")
        if username and sealed and self._smtp.open_secret is not None:
            try:
                password = self._smtp.open_secret(tenant_id, SMTP_SECRET_PURPOSE, sealed)
            except (SecmsgError, ValueError):
                log.warning("tenant SMTP password does not open", extra={"tenant_id": tenant_id})
        rate = value.get("rate_per_s")
        return SmtpTarget(host=host, port=port, tls=tls, username=username, password=password,
                          timeout_s=self._smtp.timeout_s, checked=True,
                          allowed_targets=self._smtp.allowed_targets, ca_file=self._smtp.ca_file,
                          rate_per_s=float(rate) if isinstance(rate, int | float)
                          and not isinstance(rate, bool) and rate > 0 else None)


def _list_unsubscribe(tenant_id: str, value: Any) -> dict[str, Any]:
    """``tenants.list_unsubscribe`` ``{url?: "https://...", mailto?: "mailto:..."}``: the
    tenant's own unsubscribe endpoint, for tenants whose notifications are more than one-to-one
    transactional mail. Absent (the default): no List-Unsubscribe header."""
    if not isinstance(value, dict):
        return {}
    url, mailto = value.get("url"), value.get("mailto")
    parts: list[str] = []
    if isinstance(url, str) and UNSUBSCRIBE_URL.match(url):
        parts.append(f"<{url}>")
    if isinstance(mailto, str) and UNSUBSCRIBE_MAILTO.match(mailto):
        parts.append(f"<{mailto}>")
    if not parts:
        log.warning("tenant list_unsubscribe unusable; not added", extra={"tenant_id": tenant_id})
        return {}
    return {"list_unsubscribe": ", ".join(parts),
            "list_unsubscribe_one_click": parts[0].startswith("<https:")}



class MongoUndeliverableList:
    """Addresses that hard-bounced, per tenant (``undeliverable``, written by store).

    A tenant's whole list is read at most every ``ttl_s`` and kept as a set: a query per event
    cost the database more CPU than the rest of the notification. The price: an address that
    hard-bounced less than ``ttl_s`` ago may get one more notification."""

    def __init__(self, db: AsyncDatabase[Any], *, ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._undeliverable = ReadView(db, UndeliverableDoc)
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def blocked(self, tenant_id: str, addresses: Sequence[str]) -> set[str]:
        if not addresses:
            return set()
        now = self._clock()
        entry = self._cache.get(tenant_id)
        if entry is None or now >= entry[0]:
            docs = await self._undeliverable.find({"tenant_id": tenant_id}, ["tenant_id"])
            prefix = len(tenant_id) + 1
            entry = (now + self._ttl_s, frozenset(d.id[prefix:] for d in docs))
            self._cache[tenant_id] = entry
        return {a.lower() for a in addresses} & entry[1]


class MongoRelayChooser:
    """The platform relay: the primary, or the standby while ``dnsbl_status`` (``_id:
    "platform"``) says ``relay: "standby"`` and a standby is configured. The document is read
    at most every ``check_s``; if it cannot be read the last answer stands."""

    def __init__(self, db: AsyncDatabase[Any], *, primary: SmtpTarget,
                 standby: SmtpTarget | None, check_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._coll = db[mongo.DNSBL_STATUS]
        self._primary, self._standby = primary, standby
        self._check_s = check_s
        self._clock = clock
        self._current = primary
        self._next_check = 0.0

    async def platform_target(self) -> SmtpTarget:
        if self._standby is None:
            return self._primary
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._check_s
            try:
                doc = await self._coll.find_one({"_id": mongo.DNSBL_STATUS_ID}, {"relay": 1})
            except Exception as exc:
                log.warning("relay status unreadable (%s); keeping %s", type(exc).__name__,
                            self._current.label)
                return self._current
            chosen = self._standby if (doc or {}).get("relay") == "standby" else self._primary
            if chosen is not self._current:
                log.warning("platform relay switched to %s",
                            "standby" if chosen is self._standby else "primary",
                            extra={"event": "relay_switch"})
            self._current = chosen
        return self._current
