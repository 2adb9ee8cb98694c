"""MongoDB adapter: tenant branding and templates (read-only). The delivery claims live in
NATS KV (kv.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from secmsg.notify.ports import SmtpTarget, TenantBranding
from secmsg.shared import crypto, mongo, templating
from secmsg.shared.errors import SecmsgError
from secmsg.shared.mongo import unavailable_as_503

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
    """Tenant display name, footer, disclaimers and templates, cached for ``ttl_s`` per
    tenant (a saved template reaches notify within that time)."""

    def __init__(self, db: AsyncDatabase[Any], *, ttl_s: float = 60.0,
                 smtp: TenantSmtpOptions | None = None) -> None:
        self._coll = db[mongo.TENANTS]
        self._smtp = smtp or TenantSmtpOptions()
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, TenantBranding]] = {}

    async def branding(self, tenant_id: str) -> TenantBranding:
        hit = self._cache.get(tenant_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with unavailable_as_503():
            doc = await self._coll.find_one(
                {"_id": tenant_id}, {"name": 1, "display_name": 1, "footer": 1,
                                     "disclaimers": 1, "templates": 1,
                                     "smtp": 1})
        doc = doc or {}
        branding = TenantBranding(
            tenant_id=tenant_id,
            display_name=str(doc.get("display_name") or doc.get("name") or tenant_id),
            footer=doc.get("footer") or None,
            disclaimers=tuple(str(d) for d in doc.get("disclaimers") or () if d),
            templates=_templates(doc.get("templates")),
            smtp=self._tenant_smtp(tenant_id, doc.get("smtp")),
        )
        self._cache[tenant_id] = (time.monotonic() + self._ttl, branding)
        return branding


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
        return SmtpTarget(host=host, port=port, tls=tls, username=username, password=password,
                          timeout_s=self._smtp.timeout_s, checked=True,
                          allowed_targets=self._smtp.allowed_targets, ca_file=self._smtp.ca_file)


def _templates(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {kind: entry["source"] for kind, entry in value.items()
            if kind in templating.KINDS and isinstance(entry, dict)
            and isinstance(entry.get("source"), str)}
