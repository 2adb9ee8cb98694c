"""The S3 adapter against the real S3 server: streaming uploads, ranges, aborts, concurrency."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

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
