"""What a sender (or a tenant admin) may do to a message after sending it: change its expiry,
revoke and restore a recipient's access, recall it, and read its delivery slip.

Who may: a tenant admin (API key or token with ``admin``); an API key with ``send`` for the
messages it submitted; a user token with ``send`` for the messages sent from its address.
Anything else -- another tenant's message, another sender's, an unknown id -- is 404, so a
message's existence is never revealed. Every action is idempotent: revoking twice leaves one
entry, recalling twice publishes under the same ``Nats-Msg-Id``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from secmsg.ingest import audit
from secmsg.ingest import slip as slip_mod
from secmsg.ingest.envelope import MAX_EXPIRY_DAYS
from secmsg.ingest.ports import (
    SCOPE_ADMIN,
    SCOPE_SEND,
    Credentials,
    EventSink,
    MessageRecord,
    MessageRepo,
    Origin,
)
from secmsg.shared.errors import Conflict, InvalidInput, NotFound
from secmsg.shared.events import MessageExpiryChanged, MessageRecalled, event_msg_id
from secmsg.shared.ids import is_message_id

ALL = "*"


def is_sender(creds: Credentials, message: MessageRecord) -> bool:
    """The caller sent it: the user token of its From address, or the API key that
    submitted it."""
    if creds.is_token:
        return message.sender.lower() == creds.email
    return message.submitted_by == creds.submitted_by


def may_manage(creds: Credentials, message: MessageRecord) -> bool:
    if SCOPE_ADMIN in creds.scopes:
        return True
    return SCOPE_SEND in creds.scopes and is_sender(creds, message)


async def load(*, creds: Credentials, message_id: str, messages: MessageRepo) -> MessageRecord:
    not_found = NotFound("no such message")
    if not is_message_id(message_id):
        raise not_found
    message = await messages.get(creds.tenant.tenant_id, message_id)
    if message is None or not may_manage(creds, message):
        raise not_found
    return message


async def _refuse_if_recalled(messages: MessageRepo, message: MessageRecord) -> None:
    if message.state == "recalled" or any(
            r.get("recipient") == ALL and r.get("kind") == "recalled"
            for r in await messages.revocations(message.tenant_id, message.message_id)):
        raise Conflict("the message was recalled; its content is gone")


def _refuse_if_expired(message: MessageRecord, now: datetime) -> None:
    # Past its expiry a message is gone for its readers even before the purge has run; a new
    # expiry must not bring it back (store would apply it to a message still "stored").
    if message.state in ("purging", "purged") or (
            message.expires_at is not None and message.expires_at <= now):
        raise Conflict("the message has expired (or been purged); its expiry can no longer be "
                       "changed")


async def change_expiry(*, creds: Credentials, message_id: str, expires_at: datetime | None,
                        messages: MessageRepo, events: EventSink, origin: Origin,
                        now: datetime) -> datetime | None:
    message = await load(creds=creds, message_id=message_id, messages=messages)
    if expires_at is not None:
        expires_at = (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
                      ).astimezone(UTC)
        if expires_at <= now:
            raise InvalidInput("expires_at is in the past (to end access now, revoke or "
                               "recall the message)")
        if expires_at > now + timedelta(days=MAX_EXPIRY_DAYS):
            raise InvalidInput(f"expires_at is more than {MAX_EXPIRY_DAYS} days away")
    await _refuse_if_recalled(messages, message)
    _refuse_if_expired(message, now)
    event = MessageExpiryChanged(tenant_id=message.tenant_id, message_id=message.message_id,
                                 expires_at=expires_at, changed_by=creds.actor)
    stamp = expires_at.isoformat() if expires_at else "never"
    await events.publish(event, event_msg_id(event, stamp))
    await audit.record(events=events, creds=creds, action="message.expiry_changed",
                       origin=origin, message_id=message.message_id,
                       detail={"expires_at": stamp})
    return expires_at


async def revoke(*, creds: Credentials, message_id: str, recipients: list[str] | None,
                 messages: MessageRepo, events: EventSink, origin: Origin,
                 now: datetime) -> list[str]:
    """Revoke the given recipients' access (None: every recipient); returns them."""
    message = await load(creds=creds, message_id=message_id, messages=messages)
    addressed = {a.lower() for a, _ in message.recipients}
    if recipients is None:
        wanted = sorted(addressed)
    else:
        wanted = sorted({a.strip().lower() for a in recipients})
        unknown = [a for a in wanted if a not in addressed]
        if not wanted or unknown:
            raise InvalidInput("not a recipient of this message: "
                               f"{', '.join(unknown[:5]) or '(none given)'}")
    await _refuse_if_recalled(messages, message)
    for address in wanted:
        fresh = await messages.revoke({
            "_id": f"{message.message_id}:{address}", "tenant_id": message.tenant_id,
            "message_id": message.message_id, "recipient": address, "kind": "revoked",
            "at": now, "by": creds.actor})
        if fresh:
            await audit.record(events=events, creds=creds, action="message.revoked",
                               origin=origin, message_id=message.message_id,
                               subject_address=address, detail={"change": "revoked"})
    return wanted


async def restore(*, creds: Credentials, message_id: str, address: str,
                  messages: MessageRepo, events: EventSink, origin: Origin) -> None:
    message = await load(creds=creds, message_id=message_id, messages=messages)
    address = address.strip().lower()
    kind = await messages.restore(message.tenant_id, message.message_id, address)
    if kind == "recalled":
        raise Conflict("a recalled message cannot be restored")
    if kind is None:
        if address not in {a.lower() for a, _ in message.recipients}:
            raise NotFound("no such recipient of this message")
        return  # not revoked (any more): nothing to do
    await audit.record(events=events, creds=creds, action="message.restored", origin=origin,
                       message_id=message.message_id, subject_address=address)


async def recall(*, creds: Credentials, message_id: str, messages: MessageRepo,
                 events: EventSink, origin: Origin, now: datetime) -> bool:
    """Returns False if it had been recalled before (the event is published again anyway,
    deduplicated by the bus, so a recall whose publish failed completes on retry)."""
    message = await load(creds=creds, message_id=message_id, messages=messages)
    fresh = await messages.revoke({
        "_id": f"{message.message_id}:{ALL}", "tenant_id": message.tenant_id,
        "message_id": message.message_id, "recipient": ALL, "kind": "recalled", "at": now,
        "by": creds.actor})
    event = MessageRecalled(tenant_id=message.tenant_id, message_id=message.message_id,
                            recalled_by=creds.actor)
    await events.publish(event, event_msg_id(event))
    if fresh:
        await audit.record(events=events, creds=creds, action="message.recalled",
                           origin=origin, message_id=message.message_id)
    return fresh


async def slip(*, creds: Credentials, message_id: str, messages: MessageRepo
               ) -> tuple[MessageRecord, list[slip_mod.Line]]:
    message = await load(creds=creds, message_id=message_id, messages=messages)
    tenant_id = message.tenant_id
    revoked = {str(r.get("recipient")): str(r.get("kind"))
               for r in await messages.revocations(tenant_id, message.message_id)}
    return message, slip_mod.lines(
        recipients=message.recipients,
        delivery=await messages.delivery(tenant_id, message.message_id),
        events=await messages.reader_events(tenant_id, message.message_id),
        revoked=revoked, file_names=await messages.file_names(tenant_id, message.message_id),
        notify=message.notify, received_at=message.received_at or datetime.now(UTC),
        show_bcc=is_sender(creds, message))
