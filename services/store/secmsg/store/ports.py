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

Doc = dict[str, Any]


class MessageRepo(Protocol):
    async def get(self, message_id: str) -> Doc | None: ...

    async def insert(self, doc: Mapping[str, Any]) -> bool:
        """Insert a new message document; False when one with that ``_id`` already exists."""
        ...

    async def find_many(self, message_ids: Sequence[str]) -> list[Doc]: ...

    async def expired(self, *, now: datetime, limit: int) -> list[Doc]:
        """Messages past ``expires_at`` that are not purged yet (stored or being purged)."""
        ...

    async def mark_purging(self, message_id: str, *, owner: str,
                           lease_until: datetime) -> None: ...

    async def mark_purged(self, message_id: str, *, now: datetime) -> None: ...


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


class DeliveryRepo(Protocol):
    async def record(self, *, delivery_id: str, fields: Mapping[str, Any], final: bool,
                     attempt: int) -> bool:
        """Apply one delivery state; False when a final state or a later attempt is on file."""
        ...

    async def record_many(self, updates: Sequence[DeliveryUpdate]) -> list[bool]:
        """Apply several states (at most one per ``delivery_id``) in a few round trips.

        Same rules as ``record``; returns, per update, whether it was applied.
        """
        ...


class AuditRepo(Protocol):
    async def insert(self, doc: Mapping[str, Any]) -> bool:
        """Append an audit record; False when that event id is already recorded."""
        ...


class BlobStore(Protocol):
    async def size(self, key: str) -> int: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def list_keys(self, prefix: str) -> list[tuple[str, float]]: ...
    async def ping(self) -> None: ...


class Publisher(Protocol):
    async def publish(self, event: BaseModel, msg_id: str) -> bool: ...
