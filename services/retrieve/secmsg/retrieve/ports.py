"""What retrieve's logic needs from the outside world, as Protocols (adapters/ implements them).

Records handed across these ports are plain dataclasses, so ``service.py`` never sees a
MongoDB document or a driver type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from secmsg.shared.events import AttachmentDownloaded, MessageOpened, Recipient, StoredObject


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


@dataclass(frozen=True)
class SessionRecord:
    token_hash: str
    tenant_id: str
    address: str
    expires_at: datetime


class MessageRepo(Protocol):
    """Read-only view of store's ``messages``; "live" = stored, not purged, not expired."""

    async def has_live(self, *, tenant_id: str, address: str, now: datetime) -> bool: ...

    async def list_live(self, *, tenant_id: str, address: str, now: datetime, limit: int,
                        after: tuple[datetime, str] | None) -> list[MessageRecord]: ...

    async def get_live(self, *, tenant_id: str, message_id: str, address: str,
                       now: datetime) -> MessageRecord | None: ...


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
                     expires_at: datetime) -> None: ...

    async def touch(self, *, token_hash: str, now: datetime,
                    idle_s: int) -> SessionRecord | None:
        """The live session (and mark it used now), or None if unknown, idle or expired."""
        ...

    async def delete(self, token_hash: str) -> None: ...


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
    async def send_code(self, *, to: str, code: str, tenant_name: str,
                        ttl_minutes: int) -> None: ...


class AuditPublisher(Protocol):
    async def publish(self, event: MessageOpened | AttachmentDownloaded) -> None:
        """Durably publish, or raise ``DependencyUnavailable``."""
        ...


class BlobReader(Protocol):
    def get_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]: ...
