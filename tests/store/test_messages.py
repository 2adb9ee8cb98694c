"""message.received -> messages doc + message.stored, against real NATS, FerretDB and S3."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from faststream.asgi import AsgiFastStream
from nats.aio.client import Client as NATS

from devstack.servers import Stack
from secmsg.shared import bus, mongo, subjects, worker
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.events import event_msg_id
from secmsg.shared.settings import CommonSettings
from secmsg.store import service
from secmsg.store.adapters.mongo import MongoMessageRepo
from tests.store.helpers import (
    TENANT,
    drained,
    holds,
    publish_received,
    stage_message,
    stored_events,
    wait_for,
)


async def _doc(db: Any, message_id: str) -> dict[str, Any] | None:
    return await db[mongo.MESSAGES].find_one({"_id": message_id})


async def test_received_message_is_recorded_and_announced(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    event = await stage_message(blobs, settings)
    await publish_received(publisher, event)

    doc = await wait_for(lambda: _doc(mongo_db, event.message_id))
    assert doc["tenant_id"] == TENANT
    assert doc["state"] == "stored" and doc["purged_at"] is None
    assert doc["recipient_addresses"] == ["bob@example.org", "carol@example.org"]
    assert doc["recipients"][0] == {"address": "Bob@Example.org", "kind": "to"}
    assert doc["attachment_count"] == 1
    assert doc["total_size"] == 340
    assert [o["key"] for o in doc["objects"]] == [o.key for o in event.objects]
    assert doc["objects"][1]["wrapped_key"] == event.objects[1].wrapped_key
    # BSON dates keep milliseconds.
    assert abs(doc["received_at"] - event.occurred_at) < timedelta(milliseconds=1)
    assert doc["disclaimer"] == "Confidential"

    stored = await wait_for(lambda: stored_events(nc))
    assert len(stored) == 1
    out = stored[0]
    assert (out.tenant_id, out.message_id) == (TENANT, event.message_id)
    assert out.attachment_count == 1
    assert [r.address for r in out.recipients] == ["Bob@Example.org", "carol@example.org"]
    assert out.subject == "Lab results"


async def test_redelivered_event_stores_once_and_announces_once(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    event = await stage_message(blobs, settings)
    # The same event reaching the stream three times (e.g. ingest retried past the dedupe
    # window): each is a separate delivery to the store.
    for attempt in ("", "-retry1", "-retry2"):
        await publish_received(publisher, event, attempt)
    await wait_for(lambda: _doc(mongo_db, event.message_id))
    later = await stage_message(blobs, settings)
    await publish_received(publisher, later)
    await wait_for(lambda: _doc(mongo_db, later.message_id))
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))

    assert await mongo_db[mongo.MESSAGES].count_documents({}) == 2
    stored = await stored_events(nc)
    assert sorted(s.message_id for s in stored) == sorted([event.message_id, later.message_id])


async def test_record_message_again_changes_nothing(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        nc: NATS, mongo_db: Any) -> None:
    """Straight through the service: a crash after insert, before ack, then a redelivery."""
    repo = MongoMessageRepo(mongo_db)
    event = await stage_message(blobs, settings)
    assert await service.record_message(event=event, messages=repo, blobs=blobs,
                                        publisher=publisher) is True
    first = await repo.get(event.message_id)
    assert await service.record_message(event=event, messages=repo, blobs=blobs,
                                        publisher=publisher) is False
    assert await repo.get(event.message_id) == first
    stored = await stored_events(nc)
    assert len(stored) == 1
    assert event_msg_id(stored[0]) == f"{TENANT}:{event.message_id}:message.stored"


async def test_missing_or_short_object_is_dead_lettered_and_stream_flows(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    missing = await stage_message(blobs, settings, upload=False)
    short = await stage_message(blobs, settings, truncate=5)
    good = await stage_message(blobs, settings)
    for ev in (missing, short, good):
        await publish_received(publisher, ev)

    await wait_for(lambda: _doc(mongo_db, good.message_id))
    dead = await wait_for(lambda: _dead(mongo_db, 2))
    reasons = " | ".join(d["reason"] for d in dead)
    assert "missing" in reasons and "bytes, expected" in reasons
    assert all(d["subject"] == f"secmsg.{TENANT}.message.received" for d in dead)
    assert await _doc(mongo_db, missing.message_id) is None
    assert await _doc(mongo_db, short.message_id) is None
    assert [s.message_id for s in await stored_events(nc)] == [good.message_id]


async def _dead(db: Any, n: int) -> list[dict[str, Any]] | None:
    docs = await db[mongo.DEAD_LETTERS].find({}).to_list(None)
    return docs if len(docs) >= n else None


async def test_event_with_foreign_key_is_refused(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, mongo_db: Any) -> None:
    """An event must not adopt another tenant's object (it would later purge it, too)."""
    victim = await stage_message(blobs, settings, tenant="other")
    thief = await stage_message(blobs, settings)
    obj = thief.objects[0].model_copy(update={"key": victim.objects[0].key,
                                              "object_id": victim.objects[0].object_id,
                                              "size": victim.objects[0].size})
    bad = thief.model_copy(update={"objects": [obj]})
    await publish_received(publisher, bad)
    dead = await wait_for(lambda: _dead(mongo_db, 1))
    assert "outside its message" in dead[0]["reason"]
    assert await _doc(mongo_db, thief.message_id) is None


async def test_poison_events_are_dead_lettered_and_next_is_processed(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    js = nc.jetstream()
    subj = subjects.subject(TENANT, subjects.MESSAGE_RECEIVED)
    good = await stage_message(blobs, settings)
    unknown_version = good.model_dump(mode="json") | {"version": 99}
    await js.publish(subj, b"\xff\x00 not json at all", stream=subjects.STREAM)
    await js.publish(subj, json.dumps(unknown_version).encode(), stream=subjects.STREAM)
    await js.publish(subj, b'{"kind": "message.exploded", "version": 1}', stream=subjects.STREAM)
    await publish_received(publisher, good)

    await wait_for(lambda: _doc(mongo_db, good.message_id))
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))
    dead = await _dead(mongo_db, 3)
    assert dead is not None and len(dead) == 3
    assert all(d["service"] == "store" and d["subject"] == subj for d in dead)
    assert any("version" in d["reason"] for d in dead)
    assert await mongo_db[mongo.MESSAGES].count_documents({}) == 1


async def test_storage_outage_is_retried_not_dead_lettered(
        store_app: AsgiFastStream, stack: Stack, settings: CommonSettings,
        blobs: S3BlobStore, publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    event = await stage_message(blobs, settings)
    naked = worker.EVENTS.labels("store", subjects.STORE_RECEIVED, "naked")
    before = naked._value.get()
    stack.s3.stop()
    try:
        await publish_received(publisher, event)
        # Nak'ed with back-off at least twice while the object store is away.
        await wait_for(lambda: holds(naked._value.get() >= before + 2))
        assert await _doc(mongo_db, event.message_id) is None
    finally:
        stack.s3.start()
    await wait_for(lambda: _doc(mongo_db, event.message_id))
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0
    assert [s.message_id for s in await stored_events(nc)] == [event.message_id]
