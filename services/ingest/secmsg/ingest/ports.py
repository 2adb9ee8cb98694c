"""What the ingest logic depends on; adapters in ``adapters/`` implement these."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from secmsg.shared.blobstore import BlobStore
from secmsg.shared.documents import (
    AuditDoc,
    DeliveryStatusDoc,
    DnsblStatusDoc,
    KeyRotationDoc,
    UndeliverableDoc,
)

__all__ = ["AccessRepo", "BlobStore", "Claim", "Credentials", "EventSink", "IdempotencyStore",
           "MessageRecord", "MessageRepo", "Origin", "Reports", "SmtpProbeTarget", "SmtpProber",
           "StoredTemplate", "TemplateStore", "Tenant", "TenantDirectory", "TenantProfile"]

SCOPE_SEND = "send"
SCOPE_ADMIN = "admin"
# A key created before scopes existed has no ``scopes`` field: it may send, nothing else.
DEFAULT_SCOPES = frozenset({SCOPE_SEND})


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    max_message_bytes: int
    max_recipients: int
    max_attachments: int
    max_envelope_bytes: int
    default_expiry_days: int | None
    key_generation: int = 0  # tenants.key_generation: new data keys are wrapped under it


@dataclass(frozen=True)
class Credentials:
    """Who is calling: the tenant and either an API key (by its public id, never the secret)
    or a user token (``email`` set: the signed-in address, lower-cased).

    ``scopes`` are the effective ones: a token's ``admin`` scope counts only while its email
    is a ``tenant_users`` admin (``role``).
    """

    tenant: Tenant
    key_id: str
    scopes: frozenset[str] = DEFAULT_SCOPES
    email: str | None = None
    token_id: str | None = None
    role: str | None = None  # tenant_users role of ``email``; None: not a tenant user
    token_scopes: frozenset[str] = frozenset()  # as issued, before the role check

    @property
    def is_token(self) -> bool:
        return self.email is not None

    @property
    def actor(self) -> str:
        """Who did it, for the audit trail: the token's address or ``key:<key_id>``."""
        return self.email if self.email is not None else f"key:{self.key_id}"

    @property
    def submitted_by(self) -> str:
        """``messages.submitted_by``: ``api_key:<key_id>`` (the existing contract) or the
        token's address."""
        return self.email if self.email is not None else f"api_key:{self.key_id}"


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming an Idempotency-Key.

    ``state`` is ``new`` (first attempt), ``takeover`` (a crashed attempt's stale claim, same
    message id), ``done`` (already published: answer with ``message_id``) or ``busy``.
    """

    state: str
    message_id: str
    attempt: str | None = None


class TenantDirectory(Protocol):
    async def authenticate(self, secret: str) -> Credentials | None:
        """An API key (``smk_...``) or a user token (``smt_...``); None if unknown or dead."""
    async def ping(self) -> None: ...


@dataclass(frozen=True)
class StoredTemplate:
    """A tenant's template as stored in ``tenants.templates.<kind>`` (always a valid one)."""

    kind: str
    source: str
    version: int
    updated_at: datetime | None
    updated_by: str | None = None


@dataclass(frozen=True)
class TenantProfile:
    """What the template preview shows of the tenant, and its stored templates."""

    tenant_id: str
    display_name: str
    footer: str | None
    disclaimers: tuple[str, ...]
    templates: dict[str, StoredTemplate]
    logo_url: str | None = None  # tenants.branding.logo_url


class TemplateStore(Protocol):
    async def profile(self, tenant_id: str) -> TenantProfile: ...
    async def save(self, tenant_id: str, *, kind: str, source: str, key_id: str,
                   now: datetime) -> StoredTemplate: ...
    async def delete(self, tenant_id: str, *, kind: str) -> bool: ...


class IdempotencyStore(Protocol):
    async def claim(self, doc_id: str, *, message_id: str, attempt: str, now: datetime,
                    stale_before: datetime) -> Claim: ...
    async def heartbeat(self, doc_id: str, *, attempt: str, now: datetime) -> bool: ...
    async def mark_done(self, doc_id: str, *, attempt: str, now: datetime) -> bool: ...
    async def release(self, doc_id: str, *, attempt: str) -> None: ...


class EventSink(Protocol):
    async def publish(self, event: BaseModel, msg_id: str) -> bool: ...
    async def ping(self) -> None:
        """Readiness: raise if the event bus cannot take a publish now."""
        ...


@dataclass(frozen=True)
class MessageRecord:
    """What the sender side needs of a ``messages`` document (store writes it)."""

    message_id: str
    tenant_id: str
    sender: str
    recipients: tuple[tuple[str, str], ...]  # (address as given, kind)
    submitted_by: str
    state: str
    expires_at: datetime | None
    received_at: datetime | None
    notify: bool = True  # False: the sender's own mail server delivers the placeholder


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit trail."""

    client_ip: str | None = None
    user_agent: str | None = None


class MessageRepo(Protocol):
    async def get(self, tenant_id: str, message_id: str) -> MessageRecord | None: ...
    async def received_from(self, tenant_id: str, recipient: str,
                            senders: list[str]) -> set[str]:
        """Which of ``senders`` (lower-cased) sent ``recipient`` a message of the tenant."""
    async def revocations(self, tenant_id: str, message_id: str) -> list[dict[str, Any]]: ...
    async def revoke(self, doc: dict[str, Any]) -> bool:
        """Insert a ``revocations`` entry; False if it was already there."""
    async def restore(self, tenant_id: str, message_id: str, address: str) -> str | None:
        """Delete a ``revoked`` entry; returns the kind found (None: nothing to restore)."""
    async def delivery(self, tenant_id: str, message_id: str) -> list[DeliveryStatusDoc]: ...
    async def reader_events(self, tenant_id: str, message_id: str) -> list[AuditDoc]:
        """What the recipients did (``slip.READER_KINDS``), oldest first."""
    async def file_names(self, tenant_id: str, message_id: str) -> dict[str, str]:
        """Attachment object id -> the file name the sender gave."""


class AccessRepo(Protocol):
    """API keys, tenant users, user tokens and the tenant policy."""

    async def list_keys(self, tenant_id: str) -> list[dict[str, Any]]: ...
    async def create_key(self, tenant_id: str, *, label: str,
                         scopes: tuple[str, ...]) -> str: ...
    async def revoke_key(self, tenant_id: str, key_id: str, *,
                         now: datetime) -> dict[str, Any] | None:
        """The key as it was before (``revoked_at`` None: revoked by this call); None: no such
        key of the tenant."""
    async def users(self, tenant_id: str, emails: list[str] | None = None
                    ) -> list[dict[str, Any]]: ...
    async def put_user(self, tenant_id: str, *, email: str, role: str, by: str,
                       now: datetime) -> dict[str, Any]: ...
    async def delete_user(self, tenant_id: str, email: str) -> bool: ...
    async def tokens(self, tenant_id: str, email: str | None) -> list[dict[str, Any]]: ...
    async def revoke_token(self, tenant_id: str, token_id: str, *,
                           now: datetime, by: str = "") -> dict[str, Any] | None:
        """As ``revoke_key``, for a user token (recorded in ingest's ``revocations``:
        retrieve owns ``tokens``)."""
    async def tenant(self, tenant_id: str) -> dict[str, Any]: ...
    async def set_fields(self, tenant_id: str, fields: dict[str, Any],
                         unset: tuple[str, ...] = ()) -> None: ...


class Reports(Protocol):
    """Reads of what store and notify own (``secmsg.shared.documents`` views): ingest only
    reads them; a change goes to their owner as an event."""

    def audit(self, tenant_id: str, *, since: datetime | None, until: datetime | None,
              message_id: str | None) -> AsyncIterator[AuditDoc]: ...
    async def delivery_counts(self, tenant_id: str, *, since: datetime | None,
                              until: datetime | None) -> dict[str, int]: ...
    async def dnsbl(self) -> DnsblStatusDoc | None: ...
    async def undeliverable(self, tenant_id: str) -> list[UndeliverableDoc]: ...
    async def is_undeliverable(self, tenant_id: str, address: str) -> bool: ...
    async def rotation(self, tenant_id: str, rotation_id: str) -> KeyRotationDoc | None:
        """Store's progress record of a rotation (None until store has taken it up)."""


@dataclass(frozen=True)
class SmtpProbeTarget:
    """Where the SMTP test connects: ``address`` (already SSRF-checked for a tenant's own
    server), ``host`` for TLS (SNI and certificate name)."""

    address: str
    host: str
    port: int
    tls: str  # "none" (platform relay only) | "starttls" | "tls"
    username: str | None
    password: str | None
    timeout_s: float
    ca_file: str | None = None
    local_hostname: str | None = None  # the EHLO name (the platform's, as notify gives)


class SmtpProber(Protocol):
    async def send(self, target: SmtpProbeTarget, message: bytes, *, mail_from: str,
                   to: str) -> str | None:
        """``message``: the final bytes (signed), sent as they are."""
        ...
