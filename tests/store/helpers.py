"""Store test helpers: staged messages (really encrypted, really uploaded) and a bus reader."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout

from secmsg.shared import bus, subjects
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.crypto import encrypt_all, new_data_key
from secmsg.shared.errors import NotFound
from secmsg.shared.events import (
    MessageReceived,
    MessageStored,
    NotificationDeferred,
    NotificationFailed,
    NotificationSent,
    Recipient,
    StoredObject,
)
from secmsg.shared.settings import CommonSettings
from secmsg.store import service
from secmsg.store.ports import MessageRepo

TENANT = "acme"
SEGMENT = 64  # tiny segments: several per object, still fast


async def stage_message(blobs: S3BlobStore, settings: CommonSettings, *,
                        tenant: str = TENANT,
                        parts: tuple[tuple[str, int], ...] = (("text", 40), ("attachment", 300)),
                        upload: bool = True, truncate: int = 0,
                        expires_at: datetime | None = None,
                        recipients: tuple[str, ...] = ("Bob@Example.org", "carol@example.org"),
                        inline: bool = False) -> MessageReceived:
    """Encrypt and upload a message's objects like ingest does; return its event.
    ``inline``: the ciphertext rides the event (ingest's small objects), nothing uploaded."""
    message_id = uuid.uuid4().hex
    objects = []
    for role, size in parts:
        object_id = uuid.uuid4().hex
        key = f"t/{tenant}/m/{message_id}/{object_id}"
        data = os.urandom(size)
        dek = new_data_key()
        ct = encrypt_all(dek, object_id, data, SEGMENT)
        ct = ct[:len(ct) - truncate] if truncate else ct
        if upload and not inline:
            await blobs.put_bytes(key, ct)
        objects.append(StoredObject(
            object_id=object_id, key=key, role=role,  # type: ignore[arg-type]
            filename="a.bin" if role == "attachment" else None,
            content_type="application/octet-stream", size=size,
            sha256=hashlib.sha256(data).hexdigest(),
            wrapped_key=settings.key_ring.wrap(tenant, object_id, dek), segment_size=SEGMENT,
            inline=ct if inline else None))
    return MessageReceived(
        tenant_id=tenant, message_id=message_id, sender="alice@acme.example",
        recipients=[Recipient(address=a, kind="to" if i == 0 else "cc")
                    for i, a in enumerate(recipients)],
        subject="Lab results", objects=objects, expires_at=expires_at,
        disclaimer="Confidential", submitted_by="key:test")


async def record_staged(blobs: S3BlobStore, settings: CommonSettings,
                        publisher: bus.EventPublisher, repo: MessageRepo,
                        **kw: Any) -> MessageReceived:
    """``stage_message`` (same keywords), then record it directly (no worker)."""
    event = await stage_message(blobs, settings, **kw)
    await service.record_message(event=event, messages=repo, blobs=blobs, publisher=publisher)
    return event


async def object_exists(blobs: S3BlobStore, key: str) -> bool:
    try:
        await blobs.size(key)
    except NotFound:
        return False
    return True


def sent(mid: str, rcpt: str, attempt: int = 1) -> NotificationSent:
    return NotificationSent(tenant_id=TENANT, message_id=mid, recipient=rcpt, attempt=attempt,
                            smtp_target="platform")


def deferred(mid: str, rcpt: str, attempt: int,
             reason: str = "temporary_rejection") -> NotificationDeferred:
    return NotificationDeferred(tenant_id=TENANT, message_id=mid, recipient=rcpt,
                                attempt=attempt, reason=reason, retry_at=datetime.now(UTC))


def failed(mid: str, rcpt: str, attempt: int) -> NotificationFailed:
    return NotificationFailed(tenant_id=TENANT, message_id=mid, recipient=rcpt,
                              attempt=attempt, reason="550 no such user")


async def publish_received(publisher: bus.EventPublisher, event: MessageReceived,
                           attempt: str = "") -> None:
    # ingest's own msg id; a suffix simulates a re-publish that escaped the dedupe window.
    await publisher.publish(event, f"{event.tenant_id}:{event.message_id}:received{attempt}")


async def read_subject(nc: NATS, filter_subject: str) -> list[bytes]:
    """Every message currently in the stream on ``filter_subject`` (ephemeral consumer)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(filter_subject, stream=subjects.STREAM)
    out: list[bytes] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(batch=100, timeout=0.5)
            except (NatsTimeout, TimeoutError):  # nats-py raises either
                break
            for m in msgs:
                out.append(m.data)
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


async def stored_events(nc: NATS) -> list[MessageStored]:
    raw = await read_subject(nc, subjects.any_tenant(subjects.MESSAGE_STORED))
    return [MessageStored.model_validate_json(r) for r in raw]


async def wait_for(check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0,
                   interval: float = 0.05) -> Any:
    """Poll until ``check()`` is truthy and return it; fail with the last value otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def holds(value: Any) -> Any:
    """``value`` as an awaitable: ``wait_for(lambda: holds(condition))``."""
    return value


async def drained(nc: NATS, durable: str) -> bool:
    """True once the durable consumer has handled (acked or terminated) everything so far."""
    info = await nc.jetstream().consumer_info(subjects.STREAM, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0
