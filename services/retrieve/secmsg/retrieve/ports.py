"""What retrieve's logic needs from the outside world, as Protocols (adapters/ implements them).

Records handed across these ports are plain dataclasses, so ``service.py`` never sees a
MongoDB document or a driver type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from secmsg.shared.events import (
    AttachmentDownloaded,
    AuditRecorded,
    MessageOpened,
    Recipient,
    StoredObject,
)


@dataclass(frozen=True)
class MessageRecord:
    message_id: str
    tenant_id: str
    sender: str
    recipients: list[Recipient]
    subject: str
    objects: list[StoredObject]
    attachment_count: int
    total_size: int
    received_at: datetime
    expires_at: datetime | None
    disclaimer: str | None
    opened: bool = False  # listings: the reader opened it before (store's read mark)


@dataclass(frozen=True)
class SessionRecord:
    """Who is calling: a browser session or a bearer token (``smt_...``), same shape.

    ``address`` is the lower-cased email; ``scopes`` what the credential may do (a session
    may do everything its person may); ``token_id`` only for ``via == "token"``."""

    token_hash: str
    tenant_id: str
    address: str
    expires_at: datetime | None
    scopes: tuple[str, ...] = ("read", "send")
    via: Literal["session", "token"] = "session"
    token_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class TokenRecord:
    token_hash: str
    token_id: str
    tenant_id: str
    email: str
    scopes: tuple[str, ...]
    client: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class AccountRecord:
    tenant_id: str
    email: str
    password_hash: str | None
    totp_secret_sealed: str | None
    sessions_valid_after: datetime | None
    registered_at: datetime | None
    totp_pending_sealed: str | None = None
    recovery_codes_left: int = 0


@dataclass(frozen=True)
class SessionInfo:
    """One live browser session as its owner sees it on the account page."""

    token_hash: str
    created_at: datetime | None
    last_seen_at: datetime | None
    expires_at: datetime | None
    user_agent: str | None


@dataclass(frozen=True)
class PasskeyRecord:
    """A registered WebAuthn credential: its id and public key (nothing secret)."""

    credential_id: str  # base64url, as the browser reports it
    tenant_id: str
    email: str
    public_key: str  # base64url of the COSE key
    sign_count: int
    transports: tuple[str, ...]
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    backed_up: bool = False


class PasskeyRepo(Protocol):
    async def add(self, record: PasskeyRecord) -> bool:
        """False if this credential id is registered already."""
        ...

    async def get(self, credential_id: str) -> PasskeyRecord | None: ...

    async def list(self, *, tenant_id: str, email: str) -> list[PasskeyRecord]: ...

    async def used(self, credential_id: str, *, sign_count: int, now: datetime) -> None: ...

    async def remove(self, *, tenant_id: str, email: str, credential_id: str) -> bool: ...


@dataclass(frozen=True)
class Revocation:
    kind: Literal["revoked", "recalled"]
    recipient: str  # address lower, or "*"


class MessageRepo(Protocol):
    """Read-only view of store's ``messages``; "live" = stored, not purged, not expired."""

    async def has_live(self, *, tenant_id: str, address: str, now: datetime) -> bool: ...

    async def list_live(self, *, tenant_id: str, address: str, now: datetime, limit: int,
                        after: str | None) -> list[MessageRecord]:
        """Newest first; ``after``: the listing key (``mailbox_key``) the page starts below."""
        ...

    async def get_live(self, *, tenant_id: str, message_id: str, address: str,
                       now: datetime) -> MessageRecord | None: ...

    async def addressed(self, *, tenant_id: str, message_id: str, address: str) -> bool:
        """Whether the message, in any state, was addressed to ``address``."""
        ...


class TenantRepo(Protocol):
    async def display_name(self, tenant_id: str) -> str | None: ...


class CodeRepo(Protocol):
    async def replace(self, *, tenant_id: str, address: str, code_hash: str,
                      expires_at: datetime, now: datetime) -> None:
        """Store a new code for (tenant, address), killing any earlier one."""
        ...

    async def consume(self, *, tenant_id: str, address: str, code_hash: str, now: datetime,
                      max_attempts: int) -> bool:
        """Atomically use the code if it matches, is unexpired and not dead; else count a try."""
        ...


class SessionRepo(Protocol):
    async def create(self, *, token_hash: str, tenant_id: str, address: str, now: datetime,
                     expires_at: datetime, idle_s: int | None = None,
                     user_agent: str | None = None) -> None:
        """``idle_s`` (the tenant's idle timeout) is kept with the session; None: the
        platform default passed to ``touch``. ``user_agent`` names the device on the account
        page."""
        ...

    async def touch(self, *, token_hash: str, now: datetime,
                    idle_s: int) -> SessionRecord | None:
        """The live session (and mark it used now), or None if unknown, idle or expired."""
        ...

    async def delete(self, token_hash: str) -> None: ...

    async def delete_all(self, *, tenant_id: str, address: str) -> int: ...

    async def list_for(self, *, tenant_id: str, address: str,
                       now: datetime) -> list[SessionInfo]:
        """This person's sessions not yet expired, most recently used first."""
        ...

    async def delete_others(self, *, tenant_id: str, address: str, keep: str) -> int:
        """Every session of this person but ``keep`` (a token hash)."""
        ...


class TokenRepo(Protocol):
    async def insert(self, record: TokenRecord) -> None: ...

    async def get(self, token_hash: str) -> TokenRecord | None: ...

    async def list_for(self, *, tenant_id: str, email: str) -> list[TokenRecord]: ...

    async def revoke(self, *, tenant_id: str, email: str, token_id: str,
                     now: datetime) -> bool:
        """Mark one live token of this person revoked; False if none such."""
        ...

    async def revoke_all(self, *, tenant_id: str, email: str, now: datetime) -> int: ...

    async def touch(self, token_hash: str, now: datetime) -> None: ...


class AccountRepo(Protocol):
    async def get(self, *, tenant_id: str, email: str) -> AccountRecord | None: ...

    async def create(self, *, tenant_id: str, email: str, password_hash: str | None,
                     now: datetime) -> bool:
        """Insert the account; False if it already exists (the insert decides, once)."""
        ...

    async def set_password(self, *, tenant_id: str, email: str, password_hash: str,
                           now: datetime) -> None: ...

    async def set_totp(self, *, tenant_id: str, email: str, sealed: str | None) -> None: ...

    async def set_totp_pending(self, *, tenant_id: str, email: str,
                               sealed: str | None) -> None:
        """An enrolment waiting for its first code (not yet required at sign-in)."""
        ...

    async def set_sessions_valid_after(self, *, tenant_id: str, email: str,
                                       at: datetime) -> None: ...

    async def set_recovery_codes(self, *, tenant_id: str, email: str,
                                 hashes: list[str]) -> None:
        """Replace the person's recovery codes (hashes; empty: none)."""
        ...

    async def use_recovery_code(self, *, tenant_id: str, email: str, code_hash: str) -> bool:
        """Remove one recovery code; True only for the one request that removed it."""
        ...

    async def tenant_role(self, *, tenant_id: str, email: str) -> str | None:
        """``"sender"`` or ``"admin"`` for a ``tenant_users`` entry, else None."""
        ...


class MarkerRepo(Protocol):
    async def claim(self, key: str, *, expires_at: datetime) -> bool:
        """Insert a single-use marker; False if ``key`` was already claimed (e.g. a TOTP
        step, a device code's redemption)."""
        ...


@dataclass(frozen=True)
class DeviceRecord:
    device_hash: str
    tenant_id: str
    user_code: str
    client_name: str
    scopes: tuple[str, ...]
    status: Literal["pending", "approved", "denied"]
    email: str | None  # who approved or denied
    created_at: datetime
    expires_at: datetime
    last_poll_at: datetime | None


class DeviceRepo(Protocol):
    async def insert(self, record: DeviceRecord) -> bool:
        """False if the user code is taken by a live request (the caller draws again)."""
        ...

    async def get(self, device_hash: str) -> DeviceRecord | None: ...

    async def by_user_code(self, user_code: str) -> DeviceRecord | None: ...

    async def decide(self, device_hash: str, *, status: str, email: str) -> None: ...

    async def polled(self, device_hash: str, now: datetime) -> None: ...

    async def delete(self, device_hash: str) -> None: ...


class RevocationRepo(Protocol):
    async def find(self, *, message_id: str, address: str) -> Revocation | None:
        """The entry that stops ``address`` reading ``message_id`` (its own or ``*``)."""
        ...

    async def revoked_ids(self, *, message_ids: list[str], address: str) -> set[str]: ...


class PolicyRepo(Protocol):
    async def policy(self, tenant_id: str) -> dict[str, Any]:
        """``tenants.policy`` (may be empty) plus ``templates`` sources by kind, footer and
        disclaimers, as one dict: ``{"policy": {...}, "templates": {...}, "footer": ...,
        "disclaimers": [...], "display_name": ...}``."""
        ...

    async def dkim(self, tenant_id: str) -> dict[str, Any] | None:
        """``tenants.dkim`` as ingest stored it (domain, selector, from_address, the sealed
        private key), or None: the tenant's own signing identity, used as notify uses it."""
        ...


class RateLimiter(Protocol):
    async def hit(self, *, key: str, limit: int, window_s: int, now: datetime) -> float | None:
        """Count one event; seconds until allowed again if over ``limit``, else None."""
        ...


class ExpiredCleaner(Protocol):
    async def delete_expired(self, *, now: datetime, session_idle_s: int) -> dict[str, int]:
        """Delete expired codes, used-code markers, sessions and rate-limit windows.

        Idempotent (replicas may run it at once); returns deleted counts by collection."""
        ...


class CodeMailer(Protocol):
    async def send_code(self, *, to: str, code: str, tenant_name: str, ttl_minutes: int,
                        tenant_id: str, purpose: str = "signin") -> None:
        """The body uses ``tenant_id``'s code templates (or the shipped defaults)."""
        ...


class AuditPublisher(Protocol):
    async def publish(self, event: MessageOpened | AttachmentDownloaded | AuditRecorded
                      ) -> None:
        """Durably publish, or raise ``DependencyUnavailable``."""
        ...


class BlobReader(Protocol):
    def get_range(self, key: str, offset: int, length: int,
                  chunk: int = ...) -> AsyncIterator[bytes]: ...
