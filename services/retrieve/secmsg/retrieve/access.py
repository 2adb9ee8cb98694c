"""Revocation and recall in the access path (``revocations`` in docs/design.md).

``GuardedMessageRepo`` wraps store's message view so every reader -- the message API, the
toolbar API and the webmail -- gets the same answer without remembering to ask: a revoked or
recalled message is ``Gone`` (410, ``revoked``/``recalled``) for a recipient it was addressed
to, and simply absent (404) for everyone else; listings leave it out. Downloads in progress ask
again as they stream (``RevocationGuard``): at most ``RECHECK_BYTES`` (1 MiB) leave after a
revocation or recall is recorded, so access stops mid-file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from secmsg.retrieve.ports import MessageRecord, MessageRepo, RevocationRepo
from secmsg.shared.errors import PermanentError

RECHECK_BYTES = 1024 * 1024


class Gone(PermanentError):
    """The message was revoked for this recipient or recalled by the sender."""

    status = 410

    def __init__(self, kind: str):
        super().__init__("the sender recalled this message" if kind == "recalled"
                         else "the sender revoked your access to this message")
        self.code = kind  # the error word is the kind: "revoked" | "recalled"


class GuardedMessageRepo:
    """A ``MessageRepo`` that refuses revoked and recalled messages."""

    def __init__(self, messages: MessageRepo, revocations: RevocationRepo):
        self.inner = messages
        self.revocations = revocations

    async def check(self, *, tenant_id: str, message_id: str, address: str) -> None:
        """Raise ``Gone`` if revoked for an addressed recipient; a revocation for a message
        not addressed to them is their usual 404, decided by the lookup that follows."""
        found = await self.revocations.find(message_id=message_id, address=address)
        if found is not None and await self.inner.addressed(
                tenant_id=tenant_id, message_id=message_id, address=address):
            raise Gone(found.kind)

    async def has_live(self, *, tenant_id: str, address: str, now: datetime) -> bool:
        return await self.inner.has_live(tenant_id=tenant_id, address=address, now=now)

    async def list_live(self, *, tenant_id: str, address: str, now: datetime, limit: int,
                        after: tuple[datetime, str] | None) -> list[MessageRecord]:
        page = await self.inner.list_live(tenant_id=tenant_id, address=address, now=now,
                                          limit=limit, after=after)
        gone = await self.revocations.revoked_ids(
            message_ids=[r.message_id for r in page], address=address)
        # A page may come back shorter than asked; the cursor still moves past it correctly.
        return [r for r in page if r.message_id not in gone] if gone else page

    async def get_live(self, *, tenant_id: str, message_id: str, address: str,
                       now: datetime) -> MessageRecord | None:
        await self.check(tenant_id=tenant_id, message_id=message_id, address=address)
        return await self.inner.get_live(tenant_id=tenant_id, message_id=message_id,
                                         address=address, now=now)

    async def addressed(self, *, tenant_id: str, message_id: str, address: str) -> bool:
        return await self.inner.addressed(tenant_id=tenant_id, message_id=message_id,
                                          address=address)


class RevocationGuard:
    """Asks again whether ``address`` may still read ``message_id`` while a download streams.

    The promise: no byte is sent more than ``every`` bytes past the point where the newest
    check that said "still yours" began (the request's own lookup is the check at byte 0). So
    once a revocation is recorded, at most ``every`` bytes leave before the stream stops.

    To keep downloads fast the checks are pipelined: the content goes out in pieces of
    ``every / 2``; a check starts when half an interval has been sent and is awaited only
    before the piece that would cross the bound, so its lookup (two ``_id`` reads) overlaps
    with sending. A lookup slower than sending half an interval slows the download down to
    the lookup rate rather than loosening the bound."""

    def __init__(self, messages: GuardedMessageRepo, *, tenant_id: str, message_id: str,
                 address: str, every: int = RECHECK_BYTES):
        self._messages = messages
        self._who = {"tenant_id": tenant_id, "message_id": message_id, "address": address}
        self._every = max(2, every)

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        half = self._every // 2
        sent = 0  # bytes yielded so far
        verified = 0  # offset where the newest check that passed began
        pending: tuple[int, asyncio.Task[None]] | None = None
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                for at in range(0, len(chunk), half):
                    piece = view[at:at + half]
                    if sent + len(piece) - verified > self._every:
                        if pending is None:  # (only if the pieces outran the schedule)
                            pending = (sent, asyncio.create_task(
                                self._messages.check(**self._who)))
                        began, task = pending
                        pending = None
                        await task  # Gone (or a dependency error) ends the stream here
                        verified = began
                    if pending is None and sent - verified >= half:
                        pending = (sent, asyncio.create_task(self._messages.check(**self._who)))
                    if pending is not None:
                        # A fast reader may never make the server wait on the socket: give
                        # the loop a turn so the check's lookup moves along meanwhile.
                        await asyncio.sleep(0)
                    yield piece.tobytes() if len(piece) != len(chunk) else chunk
                    sent += len(piece)
        finally:
            if pending is not None:
                pending[1].cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending[1]
            # Stopped early (revoked, or the client went away): release the object-store
            # connection now rather than at garbage collection.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
