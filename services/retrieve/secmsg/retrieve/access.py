"""Revocation and recall in the access path (``revocations`` in docs/design.md).

``GuardedMessageRepo`` wraps store's message view so every reader -- the message API, the
toolbar API and the webmail -- gets the same answer without remembering to ask: a revoked or
recalled message is ``Gone`` (410, ``revoked``/``recalled``) for a recipient it was addressed
to, and simply absent (404) for everyone else; listings leave it out. Downloads in progress ask
again as they stream (``RevocationGuard``): once a revocation or recall is recorded, at most
``recheck_bytes`` (1 MiB) or ``recheck_s`` (0.25 s) of streaming -- whichever is more -- leave
before the stream is cut, so access stops mid-file without a database read per megabyte.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from secmsg.retrieve.ports import MessageRecord, MessageRepo, RevocationRepo
from secmsg.shared.errors import PermanentError

RECHECK_BYTES = 1024 * 1024
RECHECK_S = 0.25


class Gone(PermanentError):
    """The message was revoked for this recipient or recalled by the sender."""

    status = 410

    def __init__(self, kind: str):
        super().__init__("the sender recalled this message" if kind == "recalled"
                         else "the sender revoked your access to this message")
        self.code = kind  # the error word is the kind: "revoked" | "recalled"


class GuardedMessageRepo:
    """A ``MessageRepo`` that refuses revoked and recalled messages."""

    def __init__(self, messages: MessageRepo, revocations: RevocationRepo, *,
                 recheck_bytes: int = RECHECK_BYTES, recheck_s: float = RECHECK_S):
        self.inner = messages
        self.revocations = revocations
        self.recheck_bytes = recheck_bytes  # how downloads re-check (RevocationGuard)
        self.recheck_s = recheck_s

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
                        after: str | None) -> list[MessageRecord]:
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

    The promise: no byte leaves more than ``every`` bytes, or ``every_s`` seconds, -- whichever
    allows more -- after the point where the newest check that said "still yours" began (the
    request's own lookup is the check at byte 0). So once a revocation is recorded, at most
    that much leaves before the stream stops. Bytes alone would cost a database lookup per
    ``every`` bytes, i.e. hundreds a second on a fast link (which took a third of retrieve's
    CPU, plus the database's); the time allowance bounds the lookups to about two per
    ``every_s`` however fast the link, and the byte allowance keeps a slow download's bound
    small. ``every_s`` 0: bytes only.

    The checks are pipelined: one starts once half of both allowances is used and is awaited
    only before the piece that would cross the bound, so its lookup overlaps with sending.
    Within the time allowance whole chunks (many segments) go out at once; past it the content
    goes out in pieces of ``every / 2``. A lookup slower than sending half an allowance slows
    the download down to the lookup rate rather than loosening the bound."""

    def __init__(self, messages: GuardedMessageRepo, *, tenant_id: str, message_id: str,
                 address: str, every: int | None = None, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._messages = messages
        self._who = {"tenant_id": tenant_id, "message_id": message_id, "address": address}
        self._every = max(2, messages.recheck_bytes if every is None else every)
        self._every_s = messages.recheck_s if every_s is None else every_s
        self._clock = clock

    def _start(self, sent: int) -> tuple[int, float, asyncio.Task[None]]:
        return sent, self._clock(), asyncio.create_task(self._messages.check(**self._who))

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        half = self._every // 2
        sent = 0  # bytes yielded so far
        verified, verified_at = 0, self._clock()  # where and when the newest passing check began
        pending: tuple[int, float, asyncio.Task[None]] | None = None
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                at = 0
                while at < len(chunk):
                    if pending is not None and pending[2].done():
                        await pending[2]  # Gone (or a dependency error) ends the stream here
                        verified, verified_at, pending = pending[0], pending[1], None
                    now = self._clock()
                    if now - verified_at < self._every_s:
                        size = len(chunk) - at  # within the time allowance: the rest at once
                    else:
                        room = verified + self._every - sent
                        if room <= 0:
                            if pending is None:  # (only if the pieces outran the schedule)
                                pending = self._start(sent)
                            await pending[2]
                            verified, verified_at, pending = pending[0], pending[1], None
                            continue
                        size = min(half, room)
                    if (pending is None and sent - verified >= half
                            and now - verified_at >= self._every_s / 2):
                        pending = self._start(sent)
                    if pending is not None:
                        # A fast reader may never make the server wait on the socket: give
                        # the loop a turn so the check's lookup moves along meanwhile.
                        await asyncio.sleep(0)
                    piece = view[at:at + size]
                    yield piece.tobytes() if len(piece) != len(chunk) else chunk
                    sent += len(piece)
                    at += len(piece)
        finally:
            if pending is not None:
                pending[2].cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending[2]
            # Stopped early (revoked, or the client went away): release the object-store
            # connection now rather than at garbage collection.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
