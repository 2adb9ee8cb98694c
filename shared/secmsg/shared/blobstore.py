"""Object store adapter (S3 API through the minio client), async on top of a sync client.

The minio client is synchronous, so calls run in worker threads. Uploads stream: the caller
feeds chunks through a hand-off bounded by bytes (``UPLOAD_AHEAD``, a little over one part)
that ``put_object`` reads in parts (multipart upload, ``PART_SIZE`` at a time): the caller
fills the next part while the thread sends the current one, and memory stays at about two
parts whatever the object's size. Downloads stream a byte range in ``CHUNK`` pieces, one
piece read ahead by the thread while the caller decrypts and sends the current one. Only
ciphertext ever passes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, ParamSpec, Protocol, TypeVar, cast

import urllib3
from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from secmsg.shared.errors import DependencyUnavailable, NotFound
from secmsg.shared.settings import CommonSettings

# The object-key layout every service agrees on: t/<tenant>/m/<message>/<object>.
OBJECT_ROOT = "t/"
OBJECT_KEY_RE = re.compile(r"^t/([a-z0-9][a-z0-9-]{0,39})/m/([0-9a-f]{32})/([0-9a-f]{32})$")


def object_key(tenant_id: str, message_id: str, object_id: str) -> str:
    return f"{OBJECT_ROOT}{tenant_id}/m/{message_id}/{object_id}"


def message_prefix(tenant_id: str, message_id: str) -> str:
    return f"{OBJECT_ROOT}{tenant_id}/m/{message_id}/"


PART_SIZE = 8 * 1024 * 1024
CHUNK = 4 * 1024 * 1024
# Bytes an upload's caller may hand over beyond what the thread has taken: one whole part, so
# the next part fills while the current one is sent (without it the two alternate).
UPLOAD_AHEAD = PART_SIZE + 1024 * 1024
DEFAULT_CONCURRENCY = 16  # threads (and kept connections) for short calls and downloads
_EOF = None  # the end of an upload's chunks on the hand-off queue
_P = ParamSpec("_P")
_T = TypeVar("_T")


class BlobStore(Protocol):
    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int: ...
    # An async generator: called without await, iterated with ``async for``.
    def get_range(self, key: str, offset: int, length: int,
                  chunk: int = ...) -> AsyncIterator[bytes]: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def ping(self) -> None: ...


class _QueueReader:
    """File-like ``read(n)`` over chunks pushed from the event loop, bounded by bytes.

    Feeding never needs a thread: the loop side waits (``wait_room``) until the bytes handed
    over and not yet taken are below ``max_bytes``, and the reading thread wakes it with
    ``call_soon_threadsafe`` as it takes chunks. (Feeding through ``asyncio.to_thread`` would
    deadlock once every worker thread of the default executor sits in an upload blocked on
    ``read``.) A part is joined from the chunks once, with no other copy.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_bytes: int = UPLOAD_AHEAD):
        self.q: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
        self.max_bytes = max_bytes
        self.pending = 0  # bytes put and not yet taken by the thread (loop side only)
        self._room = asyncio.Event()
        self._loop = loop
        self._left = b""  # the part of a chunk a previous read did not need
        self._eof = False

    def put(self, item: bytes | BaseException | None) -> None:
        if isinstance(item, bytes):
            self.pending += len(item)
        self.q.put(item)

    def has_room(self) -> bool:
        return self.pending < self.max_bytes

    async def wait_room(self) -> None:
        while not self.has_room():
            self._room.clear()
            await self._room.wait()

    def _taken(self, n: int) -> None:  # on the loop
        self.pending -= n
        if self.has_room():
            self._room.set()

    def read(self, n: int = -1) -> bytes:
        parts = [self._left] if self._left else []
        have = len(self._left)
        self._left = b""
        while not self._eof and (n < 0 or have < n):
            item = self.q.get()
            if item is _EOF:
                self._eof = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self._loop.call_soon_threadsafe(self._taken, len(item))
                parts.append(item)
                have += len(item)
        if 0 <= n < have:
            last = parts[-1]
            keep = len(last) - (have - n)
            parts[-1], self._left = last[:keep], last[keep:]
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _Aborted(Exception):
    """Raised inside the upload thread when the producer gave up."""


def _close(resp: Any, ahead: asyncio.Future[Any] | None) -> None:
    """Close a GET's response (and retrieve the abandoned read ahead's outcome, if any)."""
    if ahead is not None and not ahead.cancelled():
        ahead.exception()
    resp.close()
    resp.release_conn()


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(f"object store unavailable ({type(exc).__name__})")


class S3BlobStore:
    """The object store for one process. Its calls run on threads of its own: ``concurrency``
    for short calls and download reads, ``max_uploads`` for streaming uploads (each holds one
    for its whole duration, so they can never starve the short calls). The HTTP pool keeps a
    connection for every one of those threads (``from_settings``), so under load no request
    waits for, or opens, a new connection once the pool is warm."""

    def __init__(self, client: Minio, bucket: str, max_uploads: int = 64,
                 concurrency: int = DEFAULT_CONCURRENCY):
        self._client = client
        self.bucket = bucket
        self._uploads = ThreadPoolExecutor(max_uploads, thread_name_prefix="s3-upload")
        self._calls = ThreadPoolExecutor(concurrency, thread_name_prefix="s3")

    @classmethod
    def from_settings(cls, s: CommonSettings, *, concurrency: int | None = None,
                      max_uploads: int = 64) -> S3BlobStore:
        """``concurrency``: the service's own (its parallel short calls and downloads);
        ``SECMSG_S3_POOL_SIZE`` overrides it."""
        calls = s.s3_pool_size or concurrency or DEFAULT_CONCURRENCY
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3, read=60),
            maxsize=calls + max_uploads,
            retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
        )
        client = Minio(s.s3_endpoint, access_key=s.s3_access_key, secret_key=s.s3_secret_key,
                       secure=s.s3_secure, region=s.s3_region, http_client=http)
        return cls(client, s.s3_bucket, max_uploads=max_uploads, concurrency=calls)

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await self._mapped(loop.run_in_executor(
            self._calls, functools.partial(fn, *args, **kwargs)))

    async def _mapped(self, aw: Awaitable[_T]) -> _T:
        try:
            return await aw
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound("object not found") from None
            if exc.code == "NoSuchBucket":
                raise DependencyUnavailable(f"bucket {self.bucket!r} does not exist") from None
            raise _unavailable(exc) from exc
        except (Urllib3Error, OSError) as exc:
            raise _unavailable(exc) from exc

    async def ensure_bucket(self) -> None:
        if not await self._call(self._client.bucket_exists, self.bucket):
            try:
                await self._call(self._client.make_bucket, self.bucket)
            except DependencyUnavailable:
                if not await self._call(self._client.bucket_exists, self.bucket):
                    raise

    async def ping(self) -> None:
        await self._call(self._client.bucket_exists, self.bucket)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Upload everything ``chunks`` yields to ``key``; returns the bytes written.

        If ``chunks`` raises, the upload is aborted (no object is left) and the error re-raised.
        """
        loop = asyncio.get_running_loop()
        reader = _QueueReader(loop)
        upload = loop.run_in_executor(self._uploads, functools.partial(
            # minio only calls read(n) on the data it is given.
            self._client.put_object, self.bucket, key, cast(BinaryIO, reader), -1,
            part_size=PART_SIZE, num_parallel_uploads=1,
            content_type="application/octet-stream"))

        async def feed(item: bytes | None) -> bool:
            # Bounded hand-off; gives up if the upload thread has already died.
            if not reader.has_room():
                room = asyncio.ensure_future(reader.wait_room())
                both: set[asyncio.Future[Any]] = {room, upload}
                done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
                if room not in done:
                    room.cancel()
                    return False
            elif upload.done():
                return False
            reader.put(item)
            return True

        total = 0
        try:
            async for chunk in chunks:
                total += len(chunk)
                if not await feed(chunk):
                    break
            else:
                await feed(_EOF)
        except BaseException as exc:
            # Make the upload thread fail so minio aborts the multipart upload.
            reader.put(_Aborted(str(exc)))
            with contextlib.suppress(Exception):  # the producer's error is the one to report
                await upload
            raise
        await self._mapped(upload)
        return total

    async def put_bytes(self, key: str, data: bytes) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.put_stream(key, one())

    async def get_range(self, key: str, offset: int, length: int,
                        chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """Yield ``length`` bytes of ``key`` starting at ``offset``, in pieces of exactly
        ``chunk`` bytes (the last one shorter), so a reader of fixed-size records (sealed
        segments) can ask for whole ones. The next piece is read on the worker thread while
        the caller handles the current one: at most two pieces in memory."""
        loop = asyncio.get_running_loop()
        resp = await self._call(self._client.get_object, self.bucket, key, offset=offset,
                                length=length)
        it: Iterator[bytes] = resp.stream(chunk)

        def step() -> bytes | None:
            return next(it, None)

        ahead: asyncio.Future[bytes | None] | None = None
        try:
            ahead = loop.run_in_executor(self._calls, step)
            while True:
                try:
                    piece = await ahead
                except (Urllib3Error, OSError) as exc:
                    raise _unavailable(exc) from exc
                finally:
                    ahead = None
                if piece is None:
                    return
                ahead = loop.run_in_executor(self._calls, step)
                yield piece
        finally:
            # A body read to the end has already handed its connection back to the pool
            # (close() then has nothing to close); one given up halfway is closed here --
            # once the thread is out of it, if a read ahead is still running.
            if ahead is None or ahead.done():
                _close(resp, ahead)
            else:
                ahead.add_done_callback(functools.partial(_close, resp))

    async def get_bytes(self, key: str) -> bytes:
        resp = await self._call(self._client.get_object, self.bucket, key)
        try:
            data: bytes = await asyncio.get_running_loop().run_in_executor(
                self._calls, resp.read)
            return data
        finally:
            resp.close()
            resp.release_conn()

    async def size(self, key: str) -> int:
        stat = await self._call(self._client.stat_object, self.bucket, key)
        return int(stat.size or 0)

    async def delete(self, key: str) -> None:
        await self._call(self._client.remove_object, self.bucket, key)

    async def list_keys(self, prefix: str) -> list[tuple[str, float]]:
        """(key, last-modified epoch seconds) for every object under ``prefix``."""

        def run() -> list[tuple[str, float]]:
            return [(o.object_name, o.last_modified.timestamp() if o.last_modified else 0.0)
                    for o in self._client.list_objects(self.bucket, prefix=prefix,
                                                       recursive=True)]

        return await self._call(run)

    async def delete_prefix(self, prefix: str) -> int:
        keys = await self.list_keys(prefix)
        for key, _ in keys:
            await self.delete(key)
        return len(keys)
