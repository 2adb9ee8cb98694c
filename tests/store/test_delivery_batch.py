"""notification.* consumed in batches: one batch's writes, poison on its own, outages retried.

The batch tests feed store's real subscriber (handlers.register) in memory with FastStream's
TestNatsBroker over the real database; the last two run the whole worker on real NATS."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faststream.nats import NatsBroker, TestApp, TestNatsBroker
from nats.aio.client import Client as NATS

from devstack.servers import Stack
from secmsg.shared import bus, mongo, subjects, worker
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.events import (
    event_msg_id,
)
from secmsg.store import service
from secmsg.store.adapters import mongo as mongo_adapter
from secmsg.store.adapters.mongo import (
    DELIVERY_FINAL,
    DELIVERY_STATUS,
    MongoAuditRepo,
    MongoDeadLetterRepo,
    MongoDeliveryRepo,
    MongoUndeliverableRepo,
)
from secmsg.store.app import create_app
from secmsg.store.handlers import Deps, register
from secmsg.store.settings import StoreSettings
from tests.shared.jetstream_fakes import Raw, raw
from tests.store.helpers import TENANT, deferred, drained, failed, holds, sent, wait_for


def mixed(mid: str) -> list[Any]:
    """One batch's worth, in stream order; the expected outcome is in ``EXPECTED``."""
    return [
        deferred(mid, "Bob@Example.org", 1), sent(mid, "bob@example.org", 2),
        deferred(mid, "bob@example.org", 3),  # late: sent stands
        failed(mid, "carol@example.org", 1), failed(mid, "carol@example.org", 1),  # dup
        sent(mid, "carol@example.org", 2),  # a second final: the first one stands
        deferred(mid, "dan@example.org", 2), deferred(mid, "dan@example.org", 1),  # older
        sent(mid, "erin@example.org", 1), sent(mid, "erin@example.org", 1),  # dup
        deferred(mid, "frank@example.org", 1),
    ]


EXPECTED = {"bob@example.org": ("sent", 2), "carol@example.org": ("failed", 1),
            "dan@example.org": ("deferred", 2), "erin@example.org": ("sent", 1),
            "frank@example.org": ("deferred", 1)}


async def _states(db: Any, mid: str) -> dict[str, tuple[str, int]]:
    docs = await db[DELIVERY_STATUS].find({"message_id": mid}).to_list(None)
    return {d["recipient"]: (d["state"], d["attempt"]) for d in docs}


def fake(ev: Any, delivered: int = 1) -> Raw:
    return raw(ev.model_dump_json(), subjects.subject_for(ev), delivered=delivered,
               consumer=subjects.STORE_DELIVERY)


@contextlib.asynccontextmanager
async def delivery_consumer(db: Any, **settings: Any) -> AsyncIterator[Any]:
    """Store's real ``store-delivery`` subscriber (handlers.register) in memory
    (TestNatsBroker) over the real database: feed it batches with ``process_message``."""
    deps = Deps(db=db, deliveries=MongoDeliveryRepo(db), audit=MongoAuditRepo(db),
                undeliverable=MongoUndeliverableRepo(db), dead_letters=MongoDeadLetterRepo(db),
                **dict.fromkeys(("messages", "claims", "blobs", "publisher", "rotations",
                                 "tenants", "keyring", "owner")))  # type: ignore[arg-type]
    broker = NatsBroker()
    consumers = register(broker, lambda: deps, StoreSettings(**settings))
    async with TestNatsBroker(broker):
        yield consumers.subscribers[subjects.STORE_DELIVERY]


POISON_SUBJECT = subjects.subject(TENANT, subjects.NOTIFICATION_SENT)


async def test_mixed_batch_ends_in_the_per_event_state(mongo_db: Any) -> None:
    mid = uuid.uuid4().hex
    msgs = [fake(e) for e in mixed(mid)]
    poison = raw(b'{"kind": "notification.sent", "nope": 1}', POISON_SUBJECT)
    msgs.insert(4, poison)
    async with delivery_consumer(mongo_db) as sub:
        await sub.process_message(msgs)

    assert await _states(mongo_db, mid) == EXPECTED
    assert poison.settled == "term"
    assert all(m.settled == "ack" for m in msgs if m is not poison)
    dead = await mongo_db[mongo.DEAD_LETTERS].find({}).to_list(None)
    assert [(d["service"], d["subject"]) for d in dead] == [("store", POISON_SUBJECT)]
    carol = await mongo_db[DELIVERY_STATUS].find_one({"_id": f"{mid}:carol@example.org"})
    assert carol["reason"] == "550 no such user"
    # Replaying the whole batch (a redelivery) changes nothing.
    await service.record_deliveries(events=mixed(mid),
                                    deliveries=MongoDeliveryRepo(mongo_db))
    assert await _states(mongo_db, mid) == EXPECTED


async def test_applied_flags_follow_stream_order(mongo_db: Any) -> None:
    mid = uuid.uuid4().hex
    applied = await service.record_deliveries(events=mixed(mid),
                                              deliveries=MongoDeliveryRepo(mongo_db))
    # Only the survivor of each recipient was applied.
    assert applied == [False, True, False, True, False, False, True, False, True, False, True]
    again = await service.record_deliveries(events=mixed(mid),
                                            deliveries=MongoDeliveryRepo(mongo_db))
    assert again[:6] == [False] * 6 and again[8:10] == [False, False]


async def test_late_deferral_in_a_later_batch_stays_final(mongo_db: Any) -> None:
    mid = uuid.uuid4().hex
    repo = MongoDeliveryRepo(mongo_db)
    assert await service.record_deliveries(
        events=[sent(mid, "bob@example.org", 1), failed(mid, "carol@example.org", 1)],
        deliveries=repo) == [True, True]
    assert await service.record_deliveries(
        events=[deferred(mid, "bob@example.org", 2), deferred(mid, "carol@example.org", 5),
                deferred(mid, "dan@example.org", 1)], deliveries=repo) == [False, False, True]
    assert await _states(mongo_db, mid) == {"bob@example.org": ("sent", 1),
                                            "carol@example.org": ("failed", 1),
                                            "dan@example.org": ("deferred", 1)}


async def test_final_recorded_but_status_not_yet_is_repaired_by_the_redelivery(
        mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away between the two writes: nak all, and the retry converges."""
    mid = uuid.uuid4().hex
    real = mongo_adapter._put_many
    calls = 0

    async def down_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DependencyUnavailable("database unavailable (AutoReconnect)")
        await real(*args, **kwargs)

    monkeypatch.setattr(mongo_adapter, "_put_many", down_once)
    events = [sent(mid, "bob@example.org", 1), deferred(mid, "carol@example.org", 1)]
    async with delivery_consumer(mongo_db, backoff_base_s=0.25) as sub:
        msgs = [fake(e) for e in events]
        await sub.process_message(msgs)
        assert [m.settled for m in msgs] == ["nak 0.25", "nak 0.25"]
        assert await mongo_db[DELIVERY_FINAL].count_documents({}) == 1  # half-way
        assert await _states(mongo_db, mid) == {}

        msgs = [fake(e, delivered=2) for e in events]
        await sub.process_message(msgs)
    assert [m.settled for m in msgs] == ["ack", "ack"]
    assert await _states(mongo_db, mid) == {"bob@example.org": ("sent", 1),
                                            "carol@example.org": ("deferred", 1)}


async def _publish(publisher: bus.EventPublisher, ev: Any, copy: str = "") -> None:
    await publisher.publish(ev, event_msg_id(ev, ev.recipient.lower(), str(ev.attempt), copy))


async def test_worker_records_a_backlog_in_batches(
        store_env: dict[str, str], publisher: bus.EventPublisher, nc: NATS,
        mongo_db: Any) -> None:
    """Published before the worker starts, so it fetches them as one batch."""
    mid = uuid.uuid4().hex
    for n, ev in enumerate(mixed(mid)):
        await _publish(publisher, ev, str(n))  # distinct ids: duplicates really arrive twice
    await nc.jetstream().publish(POISON_SUBJECT, b"not json",
                                 headers={"Nats-Msg-Id": uuid.uuid4().hex})
    acked = worker.EVENTS.labels("store", subjects.STORE_DELIVERY, "acked")
    before = acked._value.get()
    async with TestApp(create_app()):
        await wait_for(lambda: drained(nc, subjects.STORE_DELIVERY))
        assert await _states(mongo_db, mid) == EXPECTED
    assert acked._value.get() - before == len(mixed(mid))
    dead = await mongo_db[mongo.DEAD_LETTERS].find({}).to_list(None)
    assert [d["subject"] for d in dead] == [POISON_SUBJECT]


async def test_database_down_naks_the_batch_and_records_it_once_back(
        store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, stack: Stack,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    monkeypatch.setenv("SECMSG_MONGO_TIMEOUT_MS", "500")
    mid = uuid.uuid4().hex
    naked = worker.EVENTS.labels("store", subjects.STORE_DELIVERY, "naked")
    async with TestApp(create_app()):
        before = naked._value.get()
        stack.mongo.stop()
        try:
            for n, ev in enumerate(mixed(mid)):
                await _publish(publisher, ev, str(n))
            await wait_for(lambda: holds(naked._value.get() >= before + 2 * len(mixed(mid))))
            info = await nc.jetstream().consumer_info(subjects.STREAM, subjects.STORE_DELIVERY)
            assert info.ack_floor.stream_seq == 0, "something was acked while the DB was down"
            assert info.num_redelivered > 0
        finally:
            stack.mongo.start()
        await wait_for(lambda: drained(nc, subjects.STORE_DELIVERY))
        assert await _states(mongo_db, mid) == EXPECTED
    assert await mongo_db[DELIVERY_FINAL].count_documents({}) == 3
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0
