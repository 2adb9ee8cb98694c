"""Versioned event contracts carried over NATS JetStream (see docs/events.md).

Every event is a frozen pydantic model with ``extra="forbid"``, a ``kind`` literal and a
``version``. A consumer that meets an unknown kind or version terminates the event and records
it as poison instead of guessing. Events carry metadata only: content bytes live, encrypted, in
the object store (claim check), never on NATS.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from secmsg.shared.errors import PoisonEvent


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoredObject(_Model):
    """One encrypted object in the object store (a body, an attachment, or -- for a message
    submitted as RFC 5322 -- the ``original`` raw message, kept so it can be fetched back)."""

    object_id: str
    key: str
    role: Literal["text", "html", "attachment", "original"]
    filename: str | None = None
    content_type: str
    size: int = Field(ge=0)
    sha256: str
    wrapped_key: str
    segment_size: int = Field(gt=0)


class Recipient(_Model):
    address: str
    kind: Literal["to", "cc"]


class _Event(_Model):
    version: Literal[1] = 1
    tenant_id: str
    message_id: str
    occurred_at: datetime = Field(default_factory=utcnow)


class MessageReceived(_Event):
    """ingest → store: content is durable in staging; please record and commit it."""

    kind: Literal["message.received"] = "message.received"
    sender: str
    recipients: list[Recipient]
    subject: str
    objects: list[StoredObject]
    expires_at: datetime | None = None
    disclaimer: str | None = None
    submitted_by: str
    # False when the sender's own mail server delivers the notification (the placeholder of
    # an RFC 5322 submission): store records it as usual, notify sends nothing.
    notify: bool = True


class MessageStored(_Event):
    """store → notify: the message is on record; notify each recipient."""

    kind: Literal["message.stored"] = "message.stored"
    sender: str
    recipients: list[Recipient]
    subject: str
    attachment_count: int
    expires_at: datetime | None = None
    disclaimer: str | None = None
    received_at: datetime
    notify: bool = True  # copied from MessageReceived.notify; False: notify sends nothing


class NotificationSent(_Event):
    kind: Literal["notification.sent"] = "notification.sent"
    recipient: str
    attempt: int
    smtp_target: str


class NotificationDeferred(_Event):
    kind: Literal["notification.deferred"] = "notification.deferred"
    recipient: str
    attempt: int
    reason: str
    retry_at: datetime


class NotificationFailed(_Event):
    kind: Literal["notification.failed"] = "notification.failed"
    recipient: str
    attempt: int
    reason: str


class MessageOpened(_Event):
    """retrieve → store (audit): a recipient read the message."""

    kind: Literal["message.opened"] = "message.opened"
    event_id: str
    recipient: str
    client_ip: str | None = None
    user_agent: str | None = None


class AttachmentDownloaded(_Event):
    """retrieve → store (audit): a recipient downloaded (part of) an object."""

    kind: Literal["attachment.downloaded"] = "attachment.downloaded"
    event_id: str
    recipient: str
    object_id: str
    range_start: int
    range_end: int
    client_ip: str | None = None
    user_agent: str | None = None


T = TypeVar("T", bound=_Event)

AnyEvent = Annotated[
    MessageReceived | MessageStored | NotificationSent | NotificationDeferred
    | NotificationFailed | MessageOpened | AttachmentDownloaded,
    Field(discriminator="kind"),
]
_ANY = TypeAdapter(AnyEvent)


def decode_event(raw: bytes, expected: type[T] | tuple[type[_Event], ...]) -> T:
    """Decode bytes into one of the expected event types or raise ``PoisonEvent``."""
    try:
        event = _ANY.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PoisonEvent(f"undecodable event ({where}: {first.get('msg')})") from None
    if not isinstance(event, expected):
        raise PoisonEvent(f"unexpected event kind {event.kind!r}")
    return event  # type: ignore[return-value]


def event_msg_id(event: _Event, *parts: str) -> str:
    """Deterministic Nats-Msg-Id: the server drops a re-published duplicate."""
    kind = getattr(event, "kind", type(event).__name__)
    return ":".join((event.tenant_id, event.message_id, kind, *parts))
