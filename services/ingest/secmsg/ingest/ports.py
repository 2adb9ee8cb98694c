"""What the ingest logic depends on; adapters in ``adapters/`` implement these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel

from secmsg.shared.blobstore import BlobStore

__all__ = ["BlobStore", "Claim", "Credentials", "EventSink", "IdempotencyStore", "Tenant",
           "TenantDirectory"]


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


class IdempotencyStore(Protocol):
    async def claim(self, doc_id: str, *, message_id: str, attempt: str, now: datetime,
                    stale_before: datetime) -> Claim: ...
    async def heartbeat(self, doc_id: str, *, attempt: str, now: datetime) -> bool: ...
    async def mark_done(self, doc_id: str, *, attempt: str, now: datetime) -> bool: ...
    async def release(self, doc_id: str, *, attempt: str) -> None: ...


class EventSink(Protocol):
    async def publish(self, event: BaseModel, msg_id: str) -> bool: ...
