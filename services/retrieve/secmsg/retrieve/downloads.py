"""Attachment downloads: one ``Range``, the ETag, the audit event before any byte, and the
decrypted stream (stopped between segments if access is revoked while it runs)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from secmsg.retrieve.access import GuardedMessageRepo, RevocationGuard
from secmsg.retrieve.ports import (
    AuditPublisher,
    BlobReader,
    MessageRecord,
    MessageRepo,
    SessionRecord,
)
from secmsg.retrieve.service import check_key, clip_header, decrypt_stream, get_mine
from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import NotFound, RangeNotSatisfiable
from secmsg.shared.events import AttachmentDownloaded, StoredObject
from secmsg.shared.ids import is_message_id

_RANGE_RE = re.compile(r"^(\d*)-(\d*)$")


class RangeUnsatisfiable(RangeNotSatisfiable):
    def __init__(self, size: int):
        super().__init__("the requested range is outside the content")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as (start, end) inclusive; None = serve everything.

    Syntactically invalid or multi-range headers are ignored (whole content, RFC 9110 allows
    it); a single well-formed range that misses the content raises ``RangeUnsatisfiable``.
    """
    if not header:
        return None
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    ranges = [p.strip() for p in spec.split(",")]
    if len(ranges) != 1:
        return None
    m = _RANGE_RE.match(ranges[0])
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise RangeUnsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None
    if start >= size:
        raise RangeUnsatisfiable(size)
    return start, min(int(m[2]) if m[2] else size - 1, size - 1)


def etag_for(obj: StoredObject) -> str:
    return f'"{obj.object_id}-{obj.sha256[:32]}"'


@dataclass(frozen=True)
class Download:
    record: MessageRecord
    obj: StoredObject
    start: int
    end: int  # inclusive; -1 for an empty object
    partial: bool
    etag: str
    guard: RevocationGuard | None = None

    @property
    def length(self) -> int:
        return self.end - self.start + 1


async def plan_download(*, session: SessionRecord, message_id: str, object_id: str,
                        range_header: str | None, if_range: str | None,
                        messages: MessageRepo, audit: AuditPublisher, client_ip: str | None,
                        user_agent: str | None, now: datetime) -> Download:
    record = await get_mine(session=session, message_id=message_id, messages=messages,
                             now=now)
    obj = next((o for o in record.objects
                if o.object_id == object_id and o.role == "attachment"), None)
    if obj is None or not is_message_id(object_id):
        raise NotFound("message not found")
    check_key(record, obj)
    etag = etag_for(obj)
    # A Range for a different version of the object (If-Range mismatch) gets the whole object.
    wanted = parse_range(range_header, obj.size) if if_range in (None, etag) else None
    start, end = wanted if wanted is not None else (0, obj.size - 1)
    await audit.publish(AttachmentDownloaded(
        tenant_id=record.tenant_id, message_id=record.message_id, event_id=uuid.uuid4().hex,
        recipient=session.address, object_id=obj.object_id, range_start=start,
        range_end=end, client_ip=client_ip, user_agent=clip_header(user_agent), occurred_at=now))
    guard = (RevocationGuard(messages, tenant_id=record.tenant_id,
                             message_id=record.message_id, address=session.address)
             if isinstance(messages, GuardedMessageRepo) else None)
    return Download(record, obj, start, end, wanted is not None, etag, guard)


def stream_download(*, download: Download, blobs: BlobReader,
                    keyring: KeyRing) -> AsyncIterator[bytes]:
    """The plaintext of the planned range; with a guard, a revocation or recall that lands
    while it streams stops it (``Gone`` raised between segments: the connection is cut)."""
    d = download
    chunks = decrypt_stream(blobs=blobs, keyring=keyring, tenant_id=d.record.tenant_id,
                            obj=d.obj, start=max(d.start, 0), end=max(d.end, 0))
    return d.guard.wrap(chunks) if d.guard is not None else chunks
