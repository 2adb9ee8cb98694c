"""One object of a submission: plaintext in, sealed segments out -- kept inline (in the
message document, through ``message.received``) while small, streamed to the object store
otherwise. ``delete_all`` undoes a failed submission's uploads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from secmsg.ingest import metrics
from secmsg.ingest.ports import BlobStore
from secmsg.shared.blobstore import object_key
from secmsg.shared.crypto import KeyRing, SegmentEncryptor, ciphertext_size, new_data_key
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.events import StoredObject

log = logging.getLogger(__name__)

_EOF = object()
# Ciphertext is handed to the object store's upload in pieces of at least this much: the
# request arrives in pieces of 64-256 KiB, and each hand-off costs a few task switches.
HANDOFF_BYTES = 1024 * 1024


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


def new_upload(*, blobs: BlobStore, key_ring: KeyRing, tenant_id: str, message_id: str,
               role: str, filename: str | None, content_type: str, opts: Options,
               uploads: list[Upload], generation: int = 0) -> Upload:
    """Start one object's upload, registered in ``uploads`` so a failure deletes it.
    ``generation``: the tenant's key generation the data key is wrapped under."""
    up = Upload(blobs=blobs, key_ring=key_ring, tenant_id=tenant_id, message_id=message_id,
                 role=role, filename=filename, content_type=content_type, opts=opts,
                 generation=generation, siblings=uploads)
    uploads.append(up)
    return up


class Upload:
    """One object: plaintext in, encrypted segments out -- held back while they still fit the
    inline threshold, streamed to the object store as soon as they do not. An object that ends
    within the threshold (and the message's inline budget) never touches S3."""

    def __init__(self, *, blobs: BlobStore, key_ring: KeyRing, tenant_id: str, message_id: str,
                 role: str, filename: str | None, content_type: str, opts: Options,
                 generation: int = 0, siblings: list[Upload] | None = None):
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
        self._out: list[bytes] = []  # sealed, for the upload, not yet handed over
        self._out_size = 0
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
            room = ciphertext_size(self._opts.inline_max_bytes, self._segment_size)
            if self._opts.inline_max_bytes > 0 and self._held_size + len(sealed) <= room:
                self._held.append(sealed)
                self._held_size += len(sealed)
                return
            await self._spill()
        self._out.append(sealed)
        self._out_size += len(sealed)
        if self._out_size >= HANDOFF_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        out, self._out, self._out_size = self._out, [], 0
        if out:
            await self._put(out[0] if len(out) == 1 else b"".join(out))

    async def _spill(self) -> None:
        """Too big to keep inline: start the upload with what was held back."""
        self._start()
        self._out, self._held = self._held, []
        self._out_size, self._held_size = self._held_size, 0

    def _fits_inline(self, ciphertext: int) -> bool:
        used = sum(u.inline_size for u in self._siblings if u is not self)
        return (self._opts.inline_max_bytes > 0
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
            self._out.append(last)
            await self._flush()
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


async def delete_all(blobs: BlobStore, uploads: list[Upload]) -> None:
    for up in uploads:
        await up.abort()
        if not up.uploading:  # held in memory (inline): nothing in the object store
            continue
        try:
            await blobs.delete(up.key)
        except Exception:
            log.warning("could not delete object %s after a failed submission", up.object_id)
