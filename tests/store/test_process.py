"""``python -m secmsg.store`` as a real process: health, replicas sharing work, SIGKILL, SIGTERM."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from nats.aio.client import Client as NATS

from devstack.services import ServiceProc
from secmsg.shared import bus, mongo, subjects
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings
from tests.store.helpers import drained, publish_received, stage_message, stored_events, wait_for


async def _stored_count(db: Any) -> int:
    return await db[mongo.MESSAGES].count_documents({})


async def test_process_serves_health_and_stores(
        store_env: dict[str, str], services: Callable[..., ServiceProc],
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        nc: NATS, mongo_db: Any) -> None:
    svc = services("store", **store_env)
    async with httpx.AsyncClient(base_url=svc.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        ev = await stage_message(blobs, settings)
        await publish_received(publisher, ev)
        await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id}))
        acked = 'secmsg_events_total{consumer="store-received",outcome="acked",service="store"}'

        async def metrics_after_ack() -> str:
            # The document is written before the audit row, the message.stored publish and
            # the ack: the counter follows the ack, a moment after the document shows.
            text = (await http.get("/metrics")).text
            return text if acked in text else ""

        metrics = await wait_for(metrics_after_ack)
        assert "secmsg_store_messages_stored_total 1.0" in metrics
    assert [s.message_id for s in await stored_events(nc)] == [ev.message_id]
    # The log never carries content: subject line and addresses stay out of it.
    log = svc.log_path.read_text()
    assert "Lab results" not in log and "example.org" not in log


async def test_readyz_reports_a_missing_dependency(
        store_env: dict[str, str], services: Callable[..., ServiceProc],
        nats_server: Any) -> None:
    svc = services("store", **store_env)
    nats_server.stop()
    try:
        async with httpx.AsyncClient(base_url=svc.base_url) as http:
            async def not_ready() -> httpx.Response | None:
                r = await http.get("/readyz")
                return r if r.status_code == 503 else None

            r = await wait_for(not_ready)
            body = r.json()
            assert body["status"] == "unavailable" and "nats" in body["reasons"]
            assert "mongodb" not in body["reasons"] and "s3" not in body["reasons"]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        nats_server.start()


async def test_two_replicas_share_the_durable(
        store_env: dict[str, str], services: Callable[..., ServiceProc],
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        nc: NATS, mongo_db: Any) -> None:
    fast = {**store_env, "SECMSG_STORE_BATCH_SIZE": "1"}
    a, b = services("store", **fast), services("store", **fast)
    events = [await stage_message(blobs, settings) for _ in range(16)]
    for ev in events:
        await publish_received(publisher, ev)
    await wait_for(lambda: _all_stored(mongo_db, len(events)))
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))

    ids = sorted(ev.message_id for ev in events)
    assert sorted(s.message_id for s in await stored_events(nc)) == ids
    per_replica = [_stored_in_log(svc) for svc in (a, b)]
    assert sorted(per_replica[0] | per_replica[1]) == ids
    assert per_replica[0] and per_replica[1], "one replica did all the work"


async def _all_stored(db: Any, n: int) -> bool:
    return await _stored_count(db) >= n


def _stored_in_log(svc: ServiceProc) -> set[str]:
    out = set()
    for line in svc.log_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "message stored":
            out.add(rec["message_id"])
    return out


async def test_sigkill_mid_flow_then_restart_stores_each_message_once(
        store_env: dict[str, str], services: Callable[..., ServiceProc],
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        nc: NATS, mongo_db: Any) -> None:
    svc = services("store", **{**store_env, "SECMSG_STORE_ACK_WAIT_S": "2"})
    events = [await stage_message(blobs, settings) for _ in range(30)]
    for ev in events[:10]:
        await publish_received(publisher, ev)
    await wait_for(lambda: _all_stored(mongo_db, 1), interval=0.01)
    svc.kill()  # SIGKILL: whatever was fetched and not acked is redelivered after ack_wait
    for ev in events[10:]:
        await publish_received(publisher, ev)
    svc.start()

    await wait_for(lambda: _all_stored(mongo_db, len(events)), timeout=30)
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED), timeout=30)
    ids = sorted(ev.message_id for ev in events)
    docs = await mongo_db[mongo.MESSAGES].find({}, {"_id": 1}).to_list(None)
    assert sorted(d["_id"] for d in docs) == ids
    assert sorted(s.message_id for s in await stored_events(nc)) == ids
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_sigterm_stops_cleanly(
        store_env: dict[str, str], services: Callable[..., ServiceProc],
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    svc = services("store", **store_env)
    ev = await stage_message(blobs, settings)
    await publish_received(publisher, ev)
    await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id}))
    assert svc.stop(timeout=25) == 0
    assert '"store stopped"' in svc.log_path.read_text()
