"""control.* through the worker: recall (purge + state, idempotent, never resurrected), expiry
change, and poison control events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.asgi import AsgiFastStream
from nats.aio.client import Client as NATS

from secmsg.shared import bus, mongo, subjects
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.errors import PermanentError, TransientError
from secmsg.shared.events import MessageExpiryChanged, MessageRecalled, event_msg_id
from secmsg.shared.settings import CommonSettings
from secmsg.store import control, service
from secmsg.store.adapters.mongo import MongoAuditRepo, MongoMessageRepo, MongoPurgeClaims
from tests.store.helpers import (
    TENANT,
    drained,
    object_exists,
    publish_received,
    stage_message,
    stored_events,
    wait_for,
)


def _recall(mid: str) -> MessageRecalled:
    return MessageRecalled(tenant_id=TENANT, message_id=mid, recalled_by="alice@acme.example")


async def _publish_twice(publisher: bus.EventPublisher, ev: Any) -> None:
    # Distinct Nats-Msg-Ids, so the stream really holds (and delivers) both copies.
    for copy in ("a", "b"):
        await publisher.publish(ev, f"{event_msg_id(ev)}:{copy}")


async def test_recall_purges_objects_once_and_is_never_resurrected(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    ev = await stage_message(blobs, settings)
    keep = await stage_message(blobs, settings)  # another message stays untouched
    for e in (ev, keep):
        await publish_received(publisher, e)
    await wait_for(lambda: mongo_db[mongo.MESSAGES].count_documents({}))
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))
    stray = f"t/{TENANT}/m/{ev.message_id}/{uuid.uuid4().hex}"  # e.g. a retried upload
    await blobs.put_bytes(stray, b"x" * 10)

    recall = _recall(ev.message_id)
    await _publish_twice(publisher, recall)
    doc = await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one(
        {"_id": ev.message_id, "state": "recalled"}))
    await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))

    assert doc["recalled_by"] == "alice@acme.example"
    assert abs(doc["recalled_at"] - recall.occurred_at) < timedelta(milliseconds=1)
    assert "purge_owner" not in doc and "lease_until" not in doc
    for obj in ev.objects:
        assert not await object_exists(blobs, obj.key)
    assert not await object_exists(blobs, stray)
    for obj in keep.objects:
        assert await object_exists(blobs, obj.key)
    assert (await mongo_db[mongo.MESSAGES].find_one({"_id": keep.message_id}))["state"] \
        == "stored"
    assert await mongo_db[mongo.AUDIT].count_documents(
        {"kind": "message.recalled", "message_id": ev.message_id,
         "actor": "alice@acme.example"}) == 1
    assert await mongo_db["purge_claims"].count_documents({}) == 0

    # A message.received that escaped the duplicate window comes again: nothing comes back.
    await publish_received(publisher, ev, attempt=":late")
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))
    assert (await mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id}))["state"] \
        == "recalled"
    assert sorted(s.message_id for s in await stored_events(nc)) == sorted(
        [ev.message_id, keep.message_id])
    assert await mongo_db[mongo.AUDIT].count_documents(
        {"kind": "message.accepted", "message_id": ev.message_id}) == 1
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_recall_before_the_message_is_recorded_leaves_a_tombstone(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    ev = await stage_message(blobs, settings)
    await publisher.publish(_recall(ev.message_id), event_msg_id(_recall(ev.message_id)))
    await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one(
        {"_id": ev.message_id, "state": "recalled"}))
    await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))
    for obj in ev.objects:
        assert not await object_exists(blobs, obj.key)

    await publish_received(publisher, ev)
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))
    doc = await mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id})
    assert doc["state"] == "recalled" and doc["recipient_addresses"] == []
    assert await stored_events(nc) == []  # never announced: no notification goes out
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_expiry_change_through_the_worker(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    ev = await stage_message(blobs, settings, expires_at=datetime.now(UTC) + timedelta(days=1))
    await publish_received(publisher, ev)
    await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id}))
    change = MessageExpiryChanged(tenant_id=TENANT, message_id=ev.message_id, expires_at=None,
                                  changed_by="alice@acme.example")
    await _publish_twice(publisher, change)
    await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))
    doc = await mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id})
    assert doc["expires_at"] is None and doc["state"] == "stored"
    rows = await mongo_db[mongo.AUDIT].find({"kind": "message.expiry_changed"}).to_list(None)
    assert len(rows) == 1 and rows[0]["detail"] == {"expires_at": "never"}
    assert rows[0]["actor"] == "alice@acme.example"


async def test_expiry_changes_apply_in_the_order_made_and_past_ones_purge(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo, claims, audit = (MongoMessageRepo(mongo_db), MongoPurgeClaims(mongo_db),
                           MongoAuditRepo(mongo_db))
    ev = await stage_message(blobs, settings, expires_at=None)
    await service.record_message(event=ev, messages=repo, blobs=blobs, publisher=publisher)
    now = datetime.now(UTC)

    def change(expires_at: datetime | None, made: datetime) -> MessageExpiryChanged:
        return MessageExpiryChanged(tenant_id=TENANT, message_id=ev.message_id,
                                    expires_at=expires_at, changed_by="alice@acme.example",
                                    occurred_at=made)

    async def apply(e: MessageExpiryChanged, attempt: int = 1) -> bool:
        return await control.change_expiry(event=e, messages=repo, claims=claims, audit=audit,
                                           owner="t", lease_s=30, attempt=attempt,
                                           missing_retries=2)

    later = change(now - timedelta(minutes=5), now)
    earlier = change(now + timedelta(days=9), now - timedelta(seconds=10))
    assert await apply(later) is True
    assert await apply(earlier) is False  # made before the one on file: it loses
    doc = await repo.get(ev.message_id)
    assert abs(doc["expires_at"] - (now - timedelta(minutes=5))) < timedelta(milliseconds=1)
    # Already past: the ordinary expiry purge takes it.
    assert await service.purge_expired(messages=repo, claims=claims, blobs=blobs, owner="t",
                                       lease_s=30, limit=10) == 1
    assert (await repo.get(ev.message_id))["state"] == "purged"
    assert await apply(change(None, now + timedelta(seconds=1))) is False  # purged stays
    assert await mongo_db[mongo.AUDIT].count_documents({"kind": "message.expiry_changed"}) == 3

    missing = MessageExpiryChanged(tenant_id=TENANT, message_id=uuid.uuid4().hex,
                                   expires_at=None, changed_by="alice@acme.example")
    with pytest.raises(TransientError):
        await apply(missing, attempt=2)
    with pytest.raises(PermanentError):
        await apply(missing, attempt=3)


async def test_poison_control_events_are_dead_lettered(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    js = nc.jetstream()
    await js.publish(subjects.subject(TENANT, subjects.MESSAGE_RECALLED), b"{not json")
    # Well-formed but not a control event.
    stray = _recall(uuid.uuid4().hex).model_dump_json().replace(
        '"message.recalled"', '"message.opened"')
    await js.publish(subjects.subject(TENANT, subjects.KEY_ROTATION_REQUESTED), stray.encode())
    # A recall of another tenant's message is refused for good.
    ev = await stage_message(blobs, settings)
    await service.record_message(event=ev, messages=MongoMessageRepo(mongo_db), blobs=blobs,
                                 publisher=publisher)
    foreign = MessageRecalled(tenant_id="other", message_id=ev.message_id, recalled_by="x@y")
    await publisher.publish(foreign, event_msg_id(foreign))
    # The stream keeps flowing behind them.
    good = _recall(uuid.uuid4().hex)
    await publisher.publish(good, event_msg_id(good))
    await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one({"_id": good.message_id}))
    await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))
    dead = await mongo_db[mongo.DEAD_LETTERS].find({}).to_list(None)
    assert len(dead) == 3
    assert {d["service"] for d in dead} == {"store"}
    assert (await mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id}))["state"] \
        == "stored"
    for obj in ev.objects:
        assert await object_exists(blobs, obj.key)


async def test_an_undeliverable_address_cleared_by_ingest_leaves_the_list(
        store_app: AsgiFastStream, publisher: bus.EventPublisher, nc: NATS,
        mongo_db: Any) -> None:
    """Store owns ``undeliverable``: ingest's admin route asks by ``undeliverable.cleared``."""
    from secmsg.shared.documents import UndeliverableDoc
    from secmsg.shared.events import UndeliverableCleared

    gone = {"_id": UndeliverableDoc.id_for(TENANT, "gone@example.org"), "tenant_id": TENANT,
            "address": "gone@example.org", "status": "5.1.1", "message_id": "m",
            "at": datetime.now(UTC)}
    other = {**gone, "_id": UndeliverableDoc.id_for("other", "gone@example.org"),
             "tenant_id": "other"}
    await mongo_db[mongo.UNDELIVERABLE].insert_many([gone, other])
    ev = UndeliverableCleared(tenant_id=TENANT, message_id="", event_id=uuid.uuid4().hex,
                              address="gone@example.org", cleared_by="key:k1")
    await _publish_twice(publisher, ev)  # the second copy finds nothing to remove
    await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))
    left = [d["_id"] async for d in mongo_db[mongo.UNDELIVERABLE].find({})]
    assert left == [other["_id"]]
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_another_workers_dead_letter_is_kept_once_by_store(
        store_app: AsgiFastStream, nc: NATS, mongo_db: Any) -> None:
    """Store owns ``dead_letters``: notify (any worker but store) publishes its letters with
    ``worker.PublishedDeadLetters``; store keeps each once, payload intact."""
    from secmsg.shared import worker

    letter = worker.DeadLetter(service="notify", consumer=subjects.NOTIFY_STORED,
                               subject=f"secmsg.{TENANT}.message.stored", reason="poison",
                               payload=b"\xff not json", stream_seq=41, deliveries=1)
    sink = worker.PublishedDeadLetters(nc)
    await sink.record(letter)
    await sink.record(letter)  # a second terminate attempt of the same delivery
    doc = await wait_for(lambda: mongo_db[mongo.DEAD_LETTERS].find_one(
        {"_id": f"{subjects.STREAM}:{41:020d}"}))  # the sequence padded: the list pages by _id
    await wait_for(lambda: drained(nc, subjects.STORE_DEAD_LETTERS))
    assert (doc["service"], doc["payload"], doc["state"], doc["stream_seq"]) == (
        "notify", b"\xff not json", "open", 41)
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 1
