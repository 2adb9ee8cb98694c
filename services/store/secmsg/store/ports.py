"""What the store's logic needs from the outside world.

Mongo implementations live in ``adapters/mongo.py``; the object store is
``secmsg.shared.blobstore.S3BlobStore``; the publisher is ``secmsg.shared.bus.EventPublisher``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from secmsg.shared.events import (
    AttachmentDownloaded,
    AuditRecorded,
    MessageOpened,
    NotificationBounced,
    NotificationDeferred,
    NotificationFailed,
    NotificationSent,
)
from secmsg.shared.worker import DeadLetter, DeadLetterRecorded

Doc = dict[str, Any]

# The events store's consumers take, by consumer (shared by service.py and audit.py).
StatusEvent = NotificationSent | NotificationDeferred | NotificationFailed
DeliveryEvent = StatusEvent | NotificationBounced
AuditEvent = MessageOpened | AttachmentDownloaded | AuditRecorded


class MessageRepo(Protocol):
    async def get(self, message_id: str) -> Doc | None: ...

    async def insert(self, doc: Mapping[str, Any]) -> bool:
        """Insert a new message document; False when one with that ``_id`` already exists."""
        ...

    async def insert_many(self, docs: Sequence[Mapping[str, Any]]) -> set[int]:
        """Insert new message documents (unordered, one round trip); the indexes of those
        whose ``_id`` was already there."""
        ...

    async def find_many(self, message_ids: Sequence[str]) -> list[Doc]: ...

    async def expiry_cursor(self, *, start: datetime) -> datetime:
        """The first minute whose expiry bucket is not closed; set to ``start`` if unset."""
        ...

    async def expiry_bucket(self, minute: datetime) -> list[str] | None:
        """The message ids filed under ``minute`` (``secmsg.store.expiry``); None: no bucket."""
        ...

    async def expiry_done(self, minute: datetime, message_ids: Sequence[str]) -> None:
        """Take ids out of ``minute``'s bucket."""
        ...

    async def expiry_close(self, minutes: Sequence[datetime], *, next_minute: datetime) -> None:
        """Delete those (finished) buckets and move the cursor forward to ``next_minute``."""
        ...

    async def mark_opened(self, marks: Sequence[tuple[str, datetime]]) -> None:
        """Read marks on ``mailbox`` entries (entry ``_id``, when opened): ``opened`` and the
        earliest ``opened_at``; an entry that is gone (recalled, purged) stays gone."""
        ...

    async def mark_purging(self, message_id: str, *, owner: str,
                           lease_until: datetime) -> None: ...

    async def mark_purged(self, message_id: str, *, now: datetime) -> None: ...

    async def mark_recalled(self, message_id: str, *, at: datetime, by: str) -> None:
        """``state: "recalled"`` with ``recalled_at``/``recalled_by`` (objects already gone)."""
        ...

    async def set_expiry(self, message_id: str, *, expires_at: datetime | None,
                         changed_at: datetime) -> bool:
        """Set ``expires_at`` of a stored message unless a later change is on file."""
        ...

    async def count_stored(self, tenant_id: str) -> int: ...

    async def received_before(self, tenant_id: str, *, before: datetime,
                              limit: int) -> list[Doc]:
        """A tenant's messages received before ``before`` that are not purged yet."""
        ...

    async def stored_page(self, tenant_id: str, *, after: str | None,
                          limit: int) -> list[Doc]:
        """Stored messages of a tenant with ``_id > after``, ascending by ``_id``."""
        ...

    async def set_wrapped_keys(self, message_id: str,
                               changes: Mapping[int, tuple[str, str]]) -> bool:
        """Replace ``objects[i].wrapped_key`` (old -> new) where it is still the old value."""
        ...


class PurgeClaims(Protocol):
    async def claim(self, message_id: str, *, owner: str, now: datetime,
                    lease_until: datetime) -> bool:
        """Take the purge of one message; False while another holder's lease runs."""
        ...

    async def release(self, message_id: str) -> None: ...


@dataclass(frozen=True)
class DeliveryUpdate:
    """One recipient's delivery state as an event reported it."""

    delivery_id: str
    fields: Mapping[str, Any]
    final: bool
    attempt: int


@dataclass(frozen=True)
class BounceUpdate:
    """A bounce report for one recipient: it overrides the state on file (see
    ``DeliveryRepo.record_many``)."""

    delivery_id: str
    fields: Mapping[str, Any]
    hard: bool


class DeliveryRepo(Protocol):
    async def record(self, *, delivery_id: str, fields: Mapping[str, Any], final: bool,
                     attempt: int) -> bool:
        """Apply one delivery state; False when a final state or a later attempt is on file."""
        ...

    async def record_many(self, updates: Sequence[DeliveryUpdate],
                          bounces: Sequence[BounceUpdate] = ()) -> list[bool]:
        """Apply several states (at most one per ``delivery_id``) in a few round trips.

        Same rules as ``record``; returns, per update, whether it was applied. A bounce
        (at most one per ``delivery_id`` and severity) overrides every other state: a hard
        bounce over a soft one, the first of each severity wins.
        """
        ...


class AuditRepo(Protocol):
    async def insert(self, doc: Mapping[str, Any]) -> bool:
        """Append an audit record; False when that event id is already recorded."""
        ...

    async def insert_many(self, docs: Sequence[Mapping[str, Any]]) -> int:
        """Append several (one round trip); how many were new."""
        ...


class UndeliverableRepo(Protocol):
    async def add_many(self, docs: Sequence[Mapping[str, Any]]) -> int:
        """Insert ``undeliverable`` entries; the first per ``_id`` wins. How many were new."""
        ...

    async def remove(self, tenant_id: str, address: str) -> bool:
        """Take ``address`` off the tenant's list; False when it was not on it."""
        ...


class TenantPolicies(Protocol):
    async def retention_days(self) -> list[tuple[str, int]]:
        """``(tenant_id, days)`` of every tenant whose ``policy.retention_days`` is set."""
        ...


class RotationRepo(Protocol):
    async def get(self, rotation_id: str) -> Doc | None: ...

    async def create(self, doc: Mapping[str, Any]) -> bool:
        """Insert the request if ingest's insert is missing; False when it exists."""
        ...

    async def update(self, rotation_id: str, fields: Mapping[str, Any]) -> None: ...


class BlobStore(Protocol):
    async def size(self, key: str) -> int: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def list_keys(self, prefix: str) -> list[tuple[str, float]]: ...
    async def ping(self) -> None: ...


class Publisher(Protocol):
    async def publish(self, event: BaseModel, msg_id: str) -> bool: ...


class DeadLetterRepo(Protocol):
    """``dead_letters``, store's (its own workers' letters, and every other worker's handed
    over as ``worker.DeadLetterRecorded``); store operates on them."""

    async def find(self, *, service: str | None, state: str | None, limit: int,
                   after: str | None = None) -> tuple[list[Doc], str | None]:
        """Newest first, below the letter id ``after``; ``state`` None: any state (a missing
        state is ``open``). Also where the next page starts (None: nothing further)."""
        ...

    async def get(self, letter_id: str) -> Doc | None: ...
    async def record(self, letter: DeadLetter) -> None:
        """Keep one of store's own dead letters (the ``EventWorker`` sink)."""
    async def keep(self, letter: DeadLetterRecorded) -> None:
        """Keep another worker's dead letter; once per letter id."""

    async def update(self, letter_id: str, fields: Mapping[str, Any]) -> None: ...

    async def open_counts(self) -> dict[str, int]:
        """Open dead letters by the service that wrote them."""
        ...


class RawPublisher(Protocol):
    async def __call__(self, subject: str, payload: bytes, headers: dict[str, str],
                       stream: str) -> int:
        """Publish bytes as they are to ``stream``; the stream sequence they got."""
        ...
