"""notification.* -> delivery_status and audit.* -> audit_events, through the running worker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from faststream.asgi import AsgiFastStream
from nats.aio.client import Client as NATS

from secmsg.shared import bus, mongo, subjects
from secmsg.shared.documents import AuditDoc
from secmsg.shared.events import (
    AttachmentDownloaded,
    MessageOpened,
    NotificationDeferred,
    NotificationFailed,
    NotificationSent,
    event_msg_id,
)
from secmsg.store import service
from secmsg.store.adapters.mongo import DELIVERY_STATUS, MongoDeliveryRepo
from tests.store.helpers import TENANT, drained, wait_for

MID = uuid.uuid4().hex


def sent(rcpt: str, attempt: int) -> NotificationSent:
    return NotificationSent(tenant_id=TENANT, message_id=MID, recipient=rcpt, attempt=attempt,
                            smtp_target="platform")


def deferred(rcpt: str, attempt: int) -> NotificationDeferred:
    return NotificationDeferred(tenant_id=TENANT, message_id=MID, recipient=rcpt,
                                attempt=attempt, reason="451 try later",
                                retry_at=datetime.now(UTC))


def failed(rcpt: str, attempt: int) -> NotificationFailed:
    return NotificationFailed(tenant_id=TENANT, message_id=MID, recipient=rcpt,
                              attempt=attempt, reason="550 no such user")


async def _publish(publisher: bus.EventPublisher, ev: Any) -> None:
    await publisher.publish(ev, event_msg_id(ev, ev.recipient.lower(), str(ev.attempt)))


async def _state(db: Any, rcpt: str, expect: tuple[str, int]) -> dict[str, Any] | None:
    doc = await db[DELIVERY_STATUS].find_one({"_id": f"{MID}:{rcpt.lower()}"})
    return doc if doc and (doc["state"], doc["attempt"]) == expect else None


async def test_final_delivery_states_win_over_late_deferrals(
        store_app: AsgiFastStream, publisher: bus.EventPublisher, nc: NATS,
        mongo_db: Any) -> None:
    # Published one at a time: the consumer works a batch concurrently, and here the order
    # of arrival at the store is what is being tested.
    await _publish(publisher, deferred("Bob@Example.org", 1))
    await wait_for(lambda: _state(mongo_db, "bob@example.org", ("deferred", 1)))
    await _publish(publisher, sent("Bob@Example.org", 2))
    await wait_for(lambda: _state(mongo_db, "bob@example.org", ("sent", 2)))
    await _publish(publisher, deferred("bob@example.org", 3))  # late, out of order

    await _publish(publisher, failed("carol@example.org", 1))
    await wait_for(lambda: _state(mongo_db, "carol@example.org", ("failed", 1)))
    await _publish(publisher, deferred("carol@example.org", 2))

    await _publish(publisher, deferred("dan@example.org", 2))
    await wait_for(lambda: _state(mongo_db, "dan@example.org", ("deferred", 2)))
    await _publish(publisher, deferred("dan@example.org", 1))  # an older attempt, late

    await wait_for(lambda: drained(nc, subjects.STORE_DELIVERY))

    bob = await mongo_db[DELIVERY_STATUS].find_one({"_id": f"{MID}:bob@example.org"})
    assert (bob["state"], bob["attempt"], bob["reason"]) == ("sent", 2, None)
    assert bob["tenant_id"] == TENANT and bob["message_id"] == MID
    assert bob["recipient"] == "bob@example.org"
    assert bob["updated_at"] is not None
    carol = await mongo_db[DELIVERY_STATUS].find_one({"_id": f"{MID}:carol@example.org"})
    assert (carol["state"], carol["reason"]) == ("failed", "550 no such user")
    dan = await mongo_db[DELIVERY_STATUS].find_one({"_id": f"{MID}:dan@example.org"})
    assert (dan["state"], dan["attempt"]) == ("deferred", 2)
    assert await mongo_db[DELIVERY_STATUS].count_documents({"message_id": MID}) == 3


async def test_record_delivery_is_idempotent(mongo_db: Any) -> None:
    repo = MongoDeliveryRepo(mongo_db)
    ev = sent("eve@example.org", 1)
    assert await service.record_delivery(event=ev, deliveries=repo) is True
    assert await service.record_delivery(event=ev, deliveries=repo) is False
    assert await service.record_delivery(event=deferred("eve@example.org", 2),
                                         deliveries=repo) is False
    doc = await mongo_db[DELIVERY_STATUS].find_one({"_id": f"{MID}:eve@example.org"})
    assert (doc["state"], doc["attempt"]) == ("sent", 1)


async def test_audit_events_are_recorded_once(
        store_app: AsgiFastStream, publisher: bus.EventPublisher, nc: NATS,
        mongo_db: Any) -> None:
    opened = MessageOpened(tenant_id=TENANT, message_id=MID, event_id=uuid.uuid4().hex,
                           recipient="Bob@Example.org", client_ip="203.0.113.9",
                           user_agent="pytest")
    downloaded = AttachmentDownloaded(
        tenant_id=TENANT, message_id=MID, event_id=uuid.uuid4().hex, recipient="bob@example.org",
        object_id=uuid.uuid4().hex, range_start=0, range_end=99, client_ip="203.0.113.9")
    # Twice each, under distinct Nats-Msg-Ids, so the stream really delivers both copies.
    for copy in ("a", "b"):
        await publisher.publish(opened, f"{opened.event_id}:{copy}")
        await publisher.publish(downloaded, f"{downloaded.event_id}:{copy}")

    async def both() -> list[dict[str, Any]] | None:
        docs = await mongo_db[mongo.AUDIT].find({}).to_list(None)
        return docs if len(docs) >= 2 else None

    docs = {d["kind"]: d for d in await wait_for(both)}
    assert set(docs) == {"message.opened", "attachment.downloaded"}
    # Tenant and time first (the export reads an ``_id`` range), the event's own id kept.
    assert docs["message.opened"]["_id"] == AuditDoc.id_for(TENANT, opened.occurred_at,
                                                            opened.event_id)
    assert docs["message.opened"]["_id"].startswith(f"{TENANT}:{opened.occurred_at:%Y-%m-%dT}")
    assert docs["message.opened"]["event_id"] == opened.event_id
    assert docs["message.opened"]["recipient"] == "bob@example.org"
    assert docs["message.opened"]["client_ip"] == "203.0.113.9"
    d = docs["attachment.downloaded"]
    assert (d["object_id"], d["range_start"], d["range_end"]) == (downloaded.object_id, 0, 99)
    assert d["tenant_id"] == TENANT and d["message_id"] == MID

    await wait_for(lambda: drained(nc, subjects.STORE_AUDIT))
    assert await mongo_db[mongo.AUDIT].count_documents({}) == 2
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_deferral_racing_a_final_state_never_wins(mongo_db: Any) -> None:
    """Many deferrals and one ``sent`` for the same recipient, all at once."""
    repo = MongoDeliveryRepo(mongo_db)
    for n in range(5):
        rcpt = f"race{n}@example.org"
        events: list[Any] = [deferred(rcpt, a) for a in range(1, 6)]
        events.insert(n, sent(rcpt, 3))
        await asyncio.gather(*(service.record_delivery(event=e, deliveries=repo)
                               for e in events))
        doc = await mongo_db[DELIVERY_STATUS].find_one({"_id": f"{MID}:{rcpt}"})
        assert (doc["state"], doc["attempt"]) == ("sent", 3), n
