"""Revocation and recall in the access path (``revocations`` in docs/design.md).

``GuardedMessageRepo`` wraps store's message view so every reader -- the message API, the
toolbar API and the webmail -- gets the same answer without remembering to ask: a revoked or
recalled message is ``Gone`` (410, ``revoked``/``recalled``) for a recipient it was addressed
to, and simply absent (404) for everyone else; listings leave it out. Downloads in progress ask
again between segments (``RevocationGuard``), at least every 4 MiB, so access stops mid-file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from secmsg.retrieve.ports import MessageRecord, MessageRepo, RevocationRepo
from secmsg.shared.errors import PermanentError

RECHECK_BYTES = 4 * 1024 * 1024


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
    """Asks again whether ``address`` may still read ``message_id``, once per
    ``RECHECK_BYTES`` of plaintext sent."""

    def __init__(self, messages: GuardedMessageRepo, *, tenant_id: str, message_id: str,
                 address: str, every: int = RECHECK_BYTES):
        self._messages = messages
        self._who = {"tenant_id": tenant_id, "message_id": message_id, "address": address}
        self._every = every

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        since = 0
        async for chunk in chunks:
            # Checked before sending the chunk that would cross the threshold.
            if since + len(chunk) > self._every:
                await self._messages.check(**self._who)
                since = 0
            since += len(chunk)
            yield chunk
