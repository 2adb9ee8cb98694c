"""What the deliverability logic depends on (adapters/ implements them; tests may fake them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel


class EventPublisherPort(Protocol):
    """``secmsg.shared.bus.EventPublisher``: raises ``DependencyUnavailable`` (incl.
    ``PublishUnconfirmed``) unless JetStream acknowledged the event."""

    async def publish(self, event: BaseModel, msg_id: str) -> bool: ...


class MessageDirectory(Protocol):
    async def recipients_of(self, message_id: str) -> tuple[str, frozenset[str]] | None:
        """``(tenant_id, lower-cased recipient addresses)`` of a stored message, or None."""
        ...


@dataclass(frozen=True)
class Listing:
    target: str
    zone: str
    answer: str


@dataclass(frozen=True)
class DnsblStatus:
    """The ``dnsbl_status`` document (``_id: "platform"``), see docs/design.md."""

    listed: bool
    listings: tuple[Listing, ...]
    checked_at: datetime
    relay: Literal["primary", "standby"]
    switched_at: datetime | None


class StatusRepo(Protocol):
    async def load(self) -> DnsblStatus | None: ...

    async def save(self, status: DnsblStatus) -> None: ...


LookupKind = Literal["answer", "nxdomain", "timeout", "error"]


@dataclass(frozen=True)
class Lookup:
    kind: LookupKind
    addresses: tuple[str, ...] = ()


class BlocklistResolver(Protocol):
    async def lookup_a(self, name: str) -> Lookup:
        """The A records of ``name``; never raises for DNS trouble (``timeout`` / ``error``)."""
        ...
