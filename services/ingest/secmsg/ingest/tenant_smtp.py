"""Tenant SMTP selection: the platform's default relay or the tenant's own server.

Stored as ``tenants.smtp = {mode, host, port, tls, username, password_sealed, updated_at,
updated_by}``. The own server must use TLS (implicit or STARTTLS; no plaintext option exists)
and passes the SSRF guard at save time (notify checks again at every connect, since DNS may
change). The password is sealed with the platform keyring (AAD: tenant and purpose) and is
never returned: reads show ``password_set`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from secmsg.shared import crypto
from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import InvalidInput
from secmsg.shared.ssrf import TargetRefused, TargetUnresolvable, resolve_checked

SECRET_PURPOSE = crypto.SMTP_PASSWORD_PURPOSE
Mode = Literal["platform", "own"]
Tls = Literal["starttls", "tls"]


@dataclass(frozen=True)
class SmtpConfig:
    mode: Mode
    host: str | None = None
    port: int | None = None
    tls: Tls | None = None
    username: str | None = None
    password_sealed: str | None = None
    updated_at: datetime | None = None

    @property
    def password_set(self) -> bool:
        return self.password_sealed is not None

    def to_doc(self) -> dict[str, Any]:
        return {"mode": self.mode, "host": self.host, "port": self.port, "tls": self.tls,
                "username": self.username, "password_sealed": self.password_sealed}

    @classmethod
    def from_doc(cls, doc: Any) -> SmtpConfig:
        if not isinstance(doc, dict) or doc.get("mode") != "own":
            return cls(mode="platform")
        return cls(mode="own", host=doc.get("host"), port=doc.get("port"), tls=doc.get("tls"),
                   username=doc.get("username"), password_sealed=doc.get("password_sealed"),
                   updated_at=doc.get("updated_at"))


class SmtpConfigStore(Protocol):
    async def load(self, tenant_id: str) -> SmtpConfig: ...
    async def save(self, tenant_id: str, config: SmtpConfig, *, key_id: str,
                   now: datetime) -> SmtpConfig: ...


async def get(*, tenant_id: str, store: SmtpConfigStore) -> SmtpConfig:
    return await store.load(tenant_id)


async def save(*, tenant_id: str, mode: Mode, host: str | None, port: int | None,
               tls: Tls | None, username: str | None, password: str | None, key_id: str,
               store: SmtpConfigStore, key_ring: KeyRing, allowed_targets: str,
               now: datetime) -> SmtpConfig:
    """Validate and store. ``password`` None keeps the stored one (same username); an empty
    string clears it; no username clears both (no AUTH)."""
    if mode == "platform":
        return await store.save(tenant_id, SmtpConfig(mode="platform"), key_id=key_id, now=now)
    if not host or port is None or tls is None:
        raise InvalidInput("mode 'own' needs host, port and tls ('starttls' or 'tls')")
    host = host.strip().lower().rstrip(".")
    try:
        await resolve_checked(host, port, allow=allowed_targets)
    except TargetRefused as exc:
        raise InvalidInput(f"SMTP host refused: {exc}") from None
    except TargetUnresolvable:
        raise InvalidInput("SMTP host does not resolve") from None
    sealed: str | None = None
    if username:
        if password is None:
            current = await store.load(tenant_id)
            if current.mode == "own" and current.username == username:
                sealed = current.password_sealed
        elif password:
            sealed = key_ring.seal_secret(tenant_id, SECRET_PURPOSE, password)
        if sealed is None:
            raise InvalidInput("a username needs a password")
    config = SmtpConfig(mode="own", host=host, port=port, tls=tls, username=username or None,
                        password_sealed=sealed)
    return await store.save(tenant_id, config, key_id=key_id, now=now)
