"""Accepting a message: stream the multipart body through encryption into the object store,
then publish ``message.received``. Nothing half-stored: on any failure before the publish,
every object this attempt uploaded is deleted.

Idempotency-Key (per tenant): claimed before any upload. ``done`` answers with the recorded
message id and creates nothing; a live ``pending`` claim is a 409; a stale one (its attempt
crashed: no heartbeat for ``stale_s``) is taken over with the same message id and fresh object
ids, so objects a possibly-published event refers to are never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from secmsg.ingest import metrics
from secmsg.ingest.envelope import (
    Envelope,
    attachment_content_type,
    parse_envelope,
    sanitize_filename,
    validate_envelope,
)
from secmsg.ingest.formdata import PartEnd, PartStart, boundary_of, iter_parts
from secmsg.ingest.ports import BlobStore, Claim, Credentials, EventSink, IdempotencyStore
from secmsg.ingest.upload import Options, Upload, delete_all, new_upload
from secmsg.shared import logs
from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import (
    Conflict,
    InvalidInput,
    PayloadTooLarge,
    PublishUnconfirmed,
)
from secmsg.shared.events import MessageReceived, Recipient, StoredObject, event_msg_id

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,199}$")
# Multipart framing and part headers on top of the content a limit counts.
_PART_OVERHEAD = 8192


# Called once the envelope is validated, before any content is stored: (sender, recipients,
# in_reply_to). Raises to refuse the submission (see ``secmsg.ingest.access.SendGuard``).
SendCheck = Callable[[str, "list[Recipient]", "str | None"], Awaitable[None]]


@dataclass(frozen=True)
class Accepted:
    message_id: str
    created: bool  # False: an Idempotency-Key replay, nothing new was stored


def body_cap(creds: Credentials) -> int:
    """Largest request body that can still hold content within the tenant's limits."""
    t = creds.tenant
    return t.max_message_bytes + t.max_envelope_bytes + _PART_OVERHEAD * (t.max_attachments + 2)


@contextlib.asynccontextmanager
async def _heartbeat(idem: IdempotencyStore, doc_id: str, attempt: str,
                     every_s: float) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                if not await idem.heartbeat(doc_id, attempt=attempt, now=datetime.now(UTC)):
                    log.warning("idempotency claim was taken over by another attempt")
            except Exception:
                log.warning("could not refresh the idempotency heartbeat", exc_info=True)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_idempotency_key(value: str) -> None:
    if not _IDEMPOTENCY_KEY_RE.match(value) or value != value.strip():
        raise InvalidInput("Idempotency-Key must be 1 to 200 printable ASCII characters")


async def submit_message(*, creds: Credentials, content_type: str | None,
                         content_length: int | None, idempotency_key: str | None,
                         body: AsyncIterator[bytes], blobs: BlobStore, idem: IdempotencyStore,
                         events: EventSink, key_ring: KeyRing, opts: Options,
                         check: SendCheck | None = None) -> Accepted:
    tenant = creds.tenant
    boundary = boundary_of(content_type)
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    cap = body_cap(creds)
    if content_length is not None and content_length > cap:
        raise PayloadTooLarge(f"the request body ({content_length} bytes) exceeds this tenant's "
                              f"message size limit of {tenant.max_message_bytes} bytes")

    async def produce(message_id: str, now: datetime, uploads: list[Upload]) -> MessageReceived:
        return await _receive(creds=creds, message_id=message_id, now=now, boundary=boundary,
                              cap=cap, body=body, blobs=blobs, key_ring=key_ring, opts=opts,
                              uploads=uploads, check=check)

    return await accept(creds=creds, idempotency_key=idempotency_key, produce=produce,
                        blobs=blobs, idem=idem, events=events, opts=opts)


Producer = Callable[[str, datetime, "list[Upload]"], Awaitable[MessageReceived]]


async def accept(*, creds: Credentials, idempotency_key: str | None, produce: Producer,
                 blobs: BlobStore, idem: IdempotencyStore, events: EventSink,
                 opts: Options) -> Accepted:
    """The path every submission shares: Idempotency-Key claim, ``produce`` (which uploads the
    objects and returns the event), publish, and deleting this attempt's objects on failure."""
    tenant = creds.tenant
    now = datetime.now(UTC)
    attempt = uuid.uuid4().hex
    claim: Claim | None = None
    doc_id = f"{tenant.tenant_id}:{idempotency_key}"
    if idempotency_key is not None:
        claim = await idem.claim(doc_id, message_id=uuid.uuid4().hex, attempt=attempt, now=now,
                                 stale_before=now - timedelta(seconds=opts.stale_s))
        if claim.state == "done":
            metrics.SUBMISSIONS.labels("replayed").inc()
            return Accepted(claim.message_id, created=False)
        if claim.state == "busy":
            raise Conflict("a submission with this Idempotency-Key is still in progress; "
                           "retry later")
        if claim.state == "takeover":
            log.info("taking over a stale idempotency claim")
    message_id = claim.message_id if claim else uuid.uuid4().hex
    logs.correlation_id.set(message_id)

    uploads: list[Upload] = []
    heartbeat = (_heartbeat(idem, doc_id, attempt, opts.heartbeat_s) if claim
                 else contextlib.nullcontext())
    try:
        async with heartbeat:
            event = await produce(message_id, now, uploads)
            fresh = await events.publish(event, event_msg_id(event))
        if not fresh:
            # An earlier attempt with this id already published; its objects are the ones the
            # event refers to, so this attempt's copies are surplus.
            log.info("message.received was already published by an earlier attempt")
            await delete_all(blobs, uploads)
    except BaseException as exc:
        if not isinstance(exc, PublishUnconfirmed):
            await delete_all(blobs, uploads)
        # else: the event may be in the stream and refer to these objects -- keep them; store's
        # orphan sweep removes them later if it never arrived. A retry with the same
        # Idempotency-Key republishes under the same Nats-Msg-Id, so it cannot double.
        if claim is not None:
            with contextlib.suppress(Exception):
                await idem.release(doc_id, attempt=attempt)
        metrics.SUBMISSIONS.labels(type(exc).__name__).inc()
        raise
    if claim is not None:
        try:
            await idem.mark_done(doc_id, attempt=attempt, now=datetime.now(UTC))
        except Exception:
            # The event is out; a retry will take over after the claim goes stale and its
            # publish is dropped as a duplicate. Answering 202 is right.
            log.warning("could not mark the idempotency claim done", exc_info=True)
    metrics.SUBMISSIONS.labels("accepted").inc()
    log.info("message accepted", extra={"event": "message.received"})
    return Accepted(message_id, created=True)


async def _receive(*, creds: Credentials, message_id: str, now: datetime, boundary: bytes,
                   cap: int, body: AsyncIterator[bytes], blobs: BlobStore, key_ring: KeyRing,
                   opts: Options, uploads: list[Upload],
                   check: SendCheck | None = None) -> MessageReceived:
    """Walk the parts: envelope first, then attachments, each streamed as it arrives."""
    tenant = creds.tenant
    state = "expect_envelope"
    envelope = bytearray()
    total = 0
    attachments = 0
    current: Upload | None = None
    stored: list[StoredObject] = []
    validated: tuple[Envelope, str, list[Recipient], datetime | None] | None = None

    def start(role: str, filename: str | None, ctype: str) -> Upload:
        return new_upload(blobs=blobs, key_ring=key_ring, tenant_id=tenant.tenant_id,
                          message_id=message_id, role=role, filename=filename,
                          content_type=ctype, opts=opts, uploads=uploads,
                          generation=tenant.key_generation)

    def count(n: int) -> None:
        nonlocal total
        total += n
        if total > tenant.max_message_bytes:
            raise PayloadTooLarge(f"the message is larger than this tenant's limit of "
                                  f"{tenant.max_message_bytes} bytes")

    async for ev in iter_parts(body, boundary, max_size=cap):
        if isinstance(ev, PartStart):
            if state == "expect_envelope":
                if ev.name != "envelope":
                    raise InvalidInput("the first part must be the 'envelope' (JSON)")
                state = "envelope"
            else:
                if ev.name != "attachment":
                    raise InvalidInput(f"unexpected part {ev.name[:50]!r}: after the envelope "
                                       "only 'attachment' parts are allowed")
                attachments += 1
                if attachments > tenant.max_attachments:
                    raise PayloadTooLarge(f"more than {tenant.max_attachments} attachments")
                current = start("attachment", sanitize_filename(ev.filename),
                                     attachment_content_type(ev.content_type))
                state = "attachment"
        elif isinstance(ev, PartEnd):
            if state == "envelope":
                env = parse_envelope(bytes(envelope))
                validated = (env, *validate_envelope(env, tenant, now))
                if check is not None:
                    await check(validated[1], validated[2], env.in_reply_to)
                for role, text in (("text", env.text), ("html", env.html)):
                    if text is not None:
                        data = text.encode()
                        count(len(data))
                        up = start(role, None, f"text/{'plain' if role == 'text' else role}"
                                        "; charset=utf-8")
                        await up.write(data)
                        stored.append(await up.finish())
                envelope.clear()
            elif state == "attachment" and current is not None:
                stored.append(await current.finish())
                current = None
            state = "between"
        elif state == "envelope":
            if len(envelope) + len(ev) > tenant.max_envelope_bytes:
                raise PayloadTooLarge(f"the envelope is larger than this tenant's limit of "
                                      f"{tenant.max_envelope_bytes} bytes")
            envelope += ev
        elif state == "attachment" and current is not None:
            count(len(ev))
            await current.write(ev)
    if validated is None:
        raise InvalidInput("the request has no 'envelope' part")
    env, sender, recipients, expires_at = validated
    return MessageReceived(
        tenant_id=tenant.tenant_id, message_id=message_id, sender=sender,
        recipients=recipients, subject=env.subject, objects=stored, expires_at=expires_at,
        disclaimer=env.disclaimer, submitted_by=creds.submitted_by)
