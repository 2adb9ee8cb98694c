"""Reading ciphertext from the object store (the shared S3 adapter, one error refined)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from minio.error import S3Error

from secmsg.shared.blobstore import CHUNK, S3BlobStore
from secmsg.shared.errors import DependencyUnavailable, IntegrityError


class S3BlobReader:
    def __init__(self, store: S3BlobStore):
        self._store = store

    async def get_range(self, key: str, offset: int, length: int,
                        chunk: int = CHUNK) -> AsyncIterator[bytes]:
        try:
            async for piece in self._store.get_range(key, offset, length, chunk):
                yield piece
        except DependencyUnavailable as exc:
            # The record says the object is longer than what is stored: it was truncated,
            # which is an integrity failure, not an outage worth retrying.
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code == "InvalidRange":
                raise IntegrityError(f"object {key} is shorter than recorded") from None
            raise

    async def ping(self) -> None:
        await self._store.ping()
