"""What the ingest logic depends on; adapters in ``adapters/`` implement these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel

from secmsg.shared.blobstore import BlobStore

__all__ = ["BlobStore", "Claim", "Credentials", "EventSink", "IdempotencyStore",
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


@dataclass(frozen=True)
class Credentials:
    """Who is submitting: the tenant and the API key (by its public id, never the secret)."""

    tenant: Tenant
    key_id: str
    scopes: frozenset[str] = DEFAULT_SCOPES


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
    async def authenticate(self, api_key: str) -> Credentials | None: ...
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
