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
import hashlib
import logging
import re
import time
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
from secmsg.shared import logs
from secmsg.shared.blobstore import object_key
from secmsg.shared.crypto import KeyRing, SegmentEncryptor, ciphertext_size, new_data_key
from secmsg.shared.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidInput,
    PayloadTooLarge,
    PublishUnconfirmed,
)
from secmsg.shared.events import MessageReceived, Recipient, StoredObject, event_msg_id

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,199}$")
_EOF = object()
# Multipart framing and part headers on top of the content a limit counts.
_PART_OVERHEAD = 8192


@dataclass(frozen=True)
class Options:
    segment_size: int
    queue_chunks: int
    heartbeat_s: float
    stale_s: float
    # Objects of at most ``inline_max_bytes`` (plaintext) go, encrypted, inside the message
    # document (through ``message.received``) instead of S3, while the message's inline
    # ciphertext stays within ``inline_total_max_bytes`` (the event must fit NATS's payload
    # cap). 0: never.
    inline_max_bytes: int = 0
    inline_total_max_bytes: int = 0


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


def new_upload(*, blobs: BlobStore, key_ring: KeyRing, tenant_id: str, message_id: str,
               role: str, filename: str | None, content_type: str, opts: Options,
               uploads: list[_Upload], generation: int = 0) -> _Upload:
    """Start one object's upload, registered in ``uploads`` so a failure deletes it.
    ``generation``: the tenant's key generation the data key is wrapped under."""
    up = _Upload(blobs=blobs, key_ring=key_ring, tenant_id=tenant_id, message_id=message_id,
                 role=role, filename=filename, content_type=content_type, opts=opts,
                 generation=generation, siblings=uploads)
    uploads.append(up)
    return up


class _Upload:
    """One object: plaintext in, encrypted segments out -- held back while they still fit the
    inline threshold, streamed to the object store as soon as they do not. An object that ends
    within the threshold (and the message's inline budget) never touches S3."""

    def __init__(self, *, blobs: BlobStore, key_ring: KeyRing, tenant_id: str, message_id: str,
                 role: str, filename: str | None, content_type: str, opts: Options,
                 generation: int = 0, siblings: list[_Upload] | None = None):
        self.object_id = uuid.uuid4().hex
        self.key = object_key(tenant_id, message_id, self.object_id)
        self.role = role
        self.filename = filename
        self.content_type = content_type
        self._blobs = blobs
        self._opts = opts
        self._siblings = siblings if siblings is not None else []
        self._segment_size = opts.segment_size
        data_key = new_data_key()
        self._wrapped = key_ring.wrap(tenant_id, self.object_id, data_key,
                                      generation=generation)
        self._enc = SegmentEncryptor(data_key, self.object_id, opts.segment_size)
        self._sha = hashlib.sha256()
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=opts.queue_chunks)
        self._task: asyncio.Task[int] | None = None
        self._held: list[bytes] = []  # sealed, not yet sent: the inline candidate
        self._held_size = 0
        self.inline_size = 0  # ciphertext kept inline once finished

    @property
    def uploading(self) -> bool:
        """True once bytes may be in the object store (a failure must delete ``key``)."""
        return self._task is not None

    def _start(self) -> None:
        self._task = asyncio.create_task(self._blobs.put_stream(self.key, self._chunks()))

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _EOF:
                return
            yield item  # type: ignore[misc]

    async def _put(self, item: object) -> None:
        # Bounded hand-off that also notices an upload which died (store down) meanwhile.
        task = self._task
        assert task is not None
        if not task.done():
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                pass
            put = asyncio.ensure_future(self._queue.put(item))
            try:
                await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not put.done():
                    put.cancel()
            if put.done() and not put.cancelled():
                return
        task.result()  # raises the upload's own error
        raise DependencyUnavailable("object store upload ended early")

    async def _emit(self, sealed: bytes) -> None:
        if self._task is None:
            if 0 < self._opts.inline_max_bytes and self._held_size + len(
                    sealed) <= ciphertext_size(self._opts.inline_max_bytes, self._segment_size):
                self._held.append(sealed)
                self._held_size += len(sealed)
                return
            await self._spill()
        await self._put(sealed)

    async def _spill(self) -> None:
        """Too big to keep inline: start the upload with what was held back."""
        self._start()
        held, self._held, self._held_size = self._held, [], 0
        for chunk in held:
            await self._put(chunk)

    def _fits_inline(self, ciphertext: int) -> bool:
        used = sum(u.inline_size for u in self._siblings if u is not self)
        return (0 < self._opts.inline_max_bytes
                and self._enc.plaintext_size <= self._opts.inline_max_bytes
                and used + ciphertext <= self._opts.inline_total_max_bytes)

    async def write(self, data: bytes) -> None:
        self._sha.update(data)
        started = time.perf_counter()
        sealed = self._enc.update(data)
        metrics.ENCRYPT_SECONDS.inc(time.perf_counter() - started)
        if sealed:
            await self._emit(sealed)

    async def finish(self) -> StoredObject:
        last = self._enc.finalize()
        inline: bytes | None = None
        if self._task is None and self._fits_inline(self._held_size + len(last)):
            inline = b"".join([*self._held, last])
            self._held, self._held_size = [], 0
            self.inline_size = len(inline)
        else:
            if self._task is None:
                await self._spill()
            await self._put(last)
            await self._put(_EOF)
            assert self._task is not None
            await self._task
        metrics.PLAINTEXT_BYTES.inc(self._enc.plaintext_size)
        return StoredObject(object_id=self.object_id, key=self.key, role=self.role,
                            filename=self.filename, content_type=self.content_type,
                            size=self._enc.plaintext_size, sha256=self._sha.hexdigest(),
                            wrapped_key=self._wrapped, segment_size=self._segment_size,
                            inline=inline)

    async def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task


async def _delete_all(blobs: BlobStore, uploads: list[_Upload]) -> None:
    for up in uploads:
        await up.abort()
        if not up.uploading:  # held in memory (inline): nothing in the object store
            continue
        try:
            await blobs.delete(up.key)
        except Exception:
            log.warning("could not delete object %s after a failed submission", up.object_id)


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

    async def produce(message_id: str, now: datetime, uploads: list[_Upload]) -> MessageReceived:
        return await _receive(creds=creds, message_id=message_id, now=now, boundary=boundary,
                              cap=cap, body=body, blobs=blobs, key_ring=key_ring, opts=opts,
                              uploads=uploads, check=check)

    return await accept(creds=creds, idempotency_key=idempotency_key, produce=produce,
                        blobs=blobs, idem=idem, events=events, opts=opts)


Producer = Callable[[str, datetime, "list[_Upload]"], Awaitable[MessageReceived]]


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

    uploads: list[_Upload] = []
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
            await _delete_all(blobs, uploads)
    except BaseException as exc:
        if not isinstance(exc, PublishUnconfirmed):
            await _delete_all(blobs, uploads)
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
                   opts: Options, uploads: list[_Upload],
                   check: SendCheck | None = None) -> MessageReceived:
    """Walk the parts: envelope first, then attachments, each streamed as it arrives."""
    tenant = creds.tenant
    state = "expect_envelope"
    envelope = bytearray()
    total = 0
    attachments = 0
    current: _Upload | None = None
    stored: list[StoredObject] = []
    validated: tuple[Envelope, str, list[Recipient], datetime | None] | None = None

    def start(role: str, filename: str | None, ctype: str) -> _Upload:
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
