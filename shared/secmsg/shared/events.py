"""Versioned event contracts carried over NATS JetStream (see docs/events.md).

Every event is a frozen pydantic model with ``extra="forbid"``, a ``kind`` literal and a
``version``. A consumer that meets an unknown kind or version terminates the event and records
it as poison instead of guessing. Events carry metadata and, for small objects only, their
ciphertext: content bytes live encrypted in the object store (claim check); an object under
ingest's inline threshold (``SECMSG_INGEST_INLINE_MAX_BYTES``, 64 KiB, at most
``SECMSG_INGEST_INLINE_TOTAL_MAX_BYTES`` per message) rides ``message.received`` as
``StoredObject.inline`` -- sealed exactly as it would be in the object store, never plaintext
-- and store keeps it in the message document instead of an S3 object.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
)

from secmsg.shared.errors import PoisonEvent


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _from_base64(value: object) -> object:
    # JSON carries the ciphertext as base64 text; Python callers and BSON hand over bytes.
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("inline ciphertext is not base64") from None
    return value


# Bytes in Python and in BSON, base64 text in JSON.
Ciphertext = Annotated[bytes, BeforeValidator(_from_base64),
                       PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str,
                                       when_used="json")]


class StoredObject(_Model):
    """One encrypted object: a body, an attachment, or -- for a message submitted as RFC 5322
    -- the ``original`` raw message, kept so it can be fetched back. In the object store at
    ``key``, or, when small, ``inline``: its whole ciphertext (the same sealed segments) kept
    in the message document, and nothing at ``key``."""

    object_id: str
    key: str
    role: Literal["text", "html", "attachment", "original"]
    filename: str | None = None
    content_type: str
    size: int = Field(ge=0)
    sha256: str
    wrapped_key: str
    segment_size: int = Field(gt=0)
    inline: Ciphertext | None = None


class Recipient(_Model):
    """``bcc`` recipients are notified like the others but never appear in any header another
    recipient sees (notify leaves them out of To/Cc; the placeholder keeps the sender's own
    Bcc header only because the sender's own server strips it on sending)."""

    address: str
    kind: Literal["to", "cc", "bcc"]


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


class NotificationBounced(_Event):
    """notify (bounce receiver) → store: a delivery status notification (RFC 3464) came back
    for a notification that had been accepted. ``hard`` (5.x.x) marks the address undeliverable
    for the tenant; soft (4.x.x) is recorded only."""

    kind: Literal["notification.bounced"] = "notification.bounced"
    recipient: str
    status: str  # the DSN Status field, e.g. "5.1.1"
    hard: bool
    reason: str  # a fixed category (see docs/design.md "Delivery reasons"), never raw text


class MessageRecalled(_Event):
    """ingest → store: the sender (or a tenant admin) withdrew the message. ingest has already
    recorded a ``revocations`` entry for all recipients (access stops at once); store purges
    the content from the object store and marks the record ``recalled``."""

    kind: Literal["message.recalled"] = "message.recalled"
    recalled_by: str


class MessageExpiryChanged(_Event):
    """ingest → store: the sender (or a tenant admin) set a new expiry (None: never)."""

    kind: Literal["message.expiry_changed"] = "message.expiry_changed"
    expires_at: datetime | None
    changed_by: str


class KeyRotationRequested(_Event):
    """ingest → store: the tenant moved to key ``generation``; re-wrap every data key of the
    tenant under it, recording progress in ``key_rotations`` (``_id`` = ``rotation_id``).
    ``message_id`` is the rotation id (events are keyed by message id)."""

    kind: Literal["key.rotation_requested"] = "key.rotation_requested"
    rotation_id: str
    generation: int = Field(ge=1)
    requested_by: str


class UndeliverableCleared(_Event):
    """ingest → store: a tenant admin took ``address`` off the tenant's undeliverable list
    (store owns the list; notify sends to the address again once store applied it).
    ``message_id`` is ``""`` (the list is the tenant's); ``event_id`` tells two clears of one
    address apart (the address may hard-bounce again in between)."""

    kind: Literal["undeliverable.cleared"] = "undeliverable.cleared"
    event_id: str
    address: str
    cleared_by: str


AuditAction = Literal[
    "message.accepted", "message.revoked", "message.recalled", "message.expiry_changed",
    "message.replied", "recipient.registered", "signin.succeeded", "signin.failed",
    "password.reset", "totp.enabled", "token.issued", "token.revoked", "key.rotated",
    "apikey.created", "apikey.revoked", "user.changed", "policy.changed", "signout.all",
    "message.fetched", "message.acknowledged", "message.restored", "template.changed",
    "smtp.changed", "dkim.changed", "undeliverable.cleared", "branding.changed",
    "passkey.added", "passkey.removed", "list_unsubscribe.changed",
    # retrieve account self-service
    "password.changed", "totp.disabled", "recovery_codes.issued", "signout.session",
    "signout.others",
]


class AuditRecorded(_Event):
    """any service → store (audit): an action that matters and is not one of the content
    events above. ``message_id`` is ``""`` for actions about an account or the tenant;
    ``actor`` is who did it (an address, ``key:<key_id>`` or ``system``); ``subject_address``
    whom it concerns (e.g. the recipient whose access was revoked). ``detail`` holds short
    fixed-vocabulary strings only -- never content, codes, passwords or tokens."""

    kind: Literal["audit.recorded"] = "audit.recorded"
    event_id: str
    action: AuditAction
    actor: str
    subject_address: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)
    client_ip: str | None = None
    user_agent: str | None = None


class MessageOpened(_Event):
    """retrieve → store (audit): a recipient read the message."""

    kind: Literal["message.opened"] = "message.opened"
    event_id: str
    recipient: str
    client_ip: str | None = None
    user_agent: str | None = None
    # the message's ``received_at``: store finds the recipient's ``mailbox`` entry by it (the
    # entry's ``_id`` holds it) to set its read mark; without it store reads the message
    received_at: datetime | None = None


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


TenantAspect = Literal["api_keys", "policy", "branding", "templates", "smtp", "dkim",
                       "key_generation", "undeliverable"]


class TenantChanged(_Event):
    """ingest → every process that caches tenant data (ingest and notify replicas):
    the tenant's settings or API keys changed; drop what is cached for the tenant. Received
    on a plain core-NATS subscription (no durable consumer, nothing to ack): see
    ``secmsg.shared.tenant_cache``. ``message_id`` is ``""``; ``aspect`` says what changed
    (for logs; a listener drops every entry of the tenant whatever it is)."""

    kind: Literal["tenant.changed"] = "tenant.changed"
    change_id: str
    aspect: TenantAspect


T = TypeVar("T", bound=_Event)

AnyEvent = Annotated[
    MessageReceived | MessageStored | NotificationSent | NotificationDeferred
    | NotificationFailed | NotificationBounced | MessageRecalled | MessageExpiryChanged
    | KeyRotationRequested | UndeliverableCleared | AuditRecorded | MessageOpened
    | AttachmentDownloaded | TenantChanged,
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
