"""The S3 adapter against the real S3 server: streaming uploads, ranges, aborts, concurrency."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from secmsg.shared.blobstore import PART_SIZE, S3BlobStore
from secmsg.shared.errors import NotFound
from secmsg.shared.settings import CommonSettings


@pytest.fixture
async def blobs(settings: CommonSettings) -> S3BlobStore:
    b = S3BlobStore.from_settings(settings)
    await b.ensure_bucket()
    return b


async def _chunks(data: bytes, size: int, pause: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if pause:
            await asyncio.sleep(pause)
        yield data[i:i + size]


async def test_multipart_stream_round_trip_and_ranges(blobs: S3BlobStore) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)  # three parts
    assert await blobs.put_stream("k/big", _chunks(data, 700_000)) == len(data)
    assert await blobs.size("k/big") == len(data)
    got = b"".join([c async for c in blobs.get_range("k/big", PART_SIZE - 10, 20)])
    assert got == data[PART_SIZE - 10: PART_SIZE + 10]


async def test_producer_error_aborts_and_leaves_no_object(blobs: S3BlobStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + 1)  # one part already uploaded
        raise ValueError("client went away")

    with pytest.raises(ValueError, match="client went away"):
        await blobs.put_stream("k/aborted", failing())
    assert await blobs.list_keys("k/aborted") == []
    with pytest.raises(NotFound):
        await blobs.get_bytes("k/aborted")


async def test_many_concurrent_slow_uploads_do_not_starve_each_other(
        blobs: S3BlobStore) -> None:
    """More concurrent uploads than the default thread pool has workers (regression: feeding
    through threads deadlocked once every worker sat in an upload waiting for data)."""
    n = (os.cpu_count() or 1) + 12
    payloads = {f"k/c{i}": os.urandom(50_000 + i) for i in range(n)}
    await asyncio.wait_for(asyncio.gather(*(
        blobs.put_stream(k, _chunks(v, 4096, pause=0.001)) for k, v in payloads.items())),
        timeout=60)
    for k, v in payloads.items():
        assert await blobs.get_bytes(k) == v



class _KeepAliveObject(BaseHTTPRequestHandler):
    """One object served with HTTP/1.1 keep-alive and Range, as MinIO does. (The local S3
    server, versitygw, answers every request with ``Connection: close``, so reuse cannot be
    seen against it.)"""

    protocol_version = "HTTP/1.1"
    body = os.urandom(300_000)

    def do_GET(self) -> None:
        start, end = 0, len(self.body) - 1
        if m := re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or ""):
            start, end = int(m.group(1)), int(m.group(2))
        part = self.body[start:end + 1]
        self.send_response(206 if self.headers.get("Range") else 200)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)

    def log_message(self, *args: Any) -> None:
        return None


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    accepted = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        super().process_request(request, client_address)


async def test_reads_hand_their_connection_back_for_reuse(settings: CommonSettings) -> None:
    """80 reads, 4 at a time, from a keep-alive server: one connection per read in flight,
    not one per read; a read given up halfway closes its own rather than pass on a half-read
    one."""
    server = _CountingServer(("127.0.0.1", 0), _KeepAliveObject)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{server.server_port}"})
        blobs = S3BlobStore.from_settings(local, concurrency=4, max_uploads=1)
        body = _KeepAliveObject.body
        gate = asyncio.Semaphore(4)

        async def one() -> None:
            async with gate:
                assert await blobs.get_bytes("k") == body
                got = [c async for c in blobs.get_range("k", 10, 100_000, chunk=4096)]
                assert b"".join(got) == body[10:100_010]

        await asyncio.gather(*(one() for _ in range(40)))
        assert server.accepted <= 4, server.accepted
        stream = blobs.get_range("k", 0, len(body), chunk=1000)
        assert len(await anext(stream)) == 1000
        await stream.aclose()
        assert await blobs.get_bytes("k") == body
        assert server.accepted <= 5, server.accepted
    finally:
        server.shutdown()
        server.server_close()
