"""Expiry/purge and the orphan sweep, against real FerretDB and S3."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.asgi import AsgiFastStream
from faststream.nats import TestApp

from secmsg.shared import bus, mongo
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings
from secmsg.store import service
from secmsg.store.adapters.mongo import MongoMessageRepo, MongoPurgeClaims
from secmsg.store.app import create_app
from tests.store.helpers import (
    TENANT,
    object_exists,
    publish_received,
    record_staged,
    stage_message,
    wait_for,
)


async def test_purge_expired_deletes_objects_and_marks_purged(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    now = datetime.now(UTC)
    expired = [await record_staged(blobs, settings, publisher, repo,
                                   expires_at=now - timedelta(minutes=1)) for _ in range(4)]
    live = await record_staged(blobs, settings, publisher, repo, expires_at=now + timedelta(days=1))
    forever = await record_staged(blobs, settings, publisher, repo, expires_at=None)
    # A stray upload in an expired message's folder goes with it.
    stray = f"t/{TENANT}/m/{expired[0].message_id}/{uuid.uuid4().hex}"
    await blobs.put_bytes(stray, b"x" * 20)

    # Five replicas at once: each message is purged by exactly one of them.
    claims = MongoPurgeClaims(mongo_db)
    counts = await asyncio.gather(*(
        service.purge_expired(messages=repo, claims=claims, blobs=blobs, owner=f"r{i}",
                              lease_s=60, limit=100)
        for i in range(5)))
    assert sum(counts) == 4

    for ev in expired:
        doc = await repo.get(ev.message_id)
        assert doc["state"] == "purged" and doc["purged_at"] is not None
        assert "purge_owner" not in doc and "lease_until" not in doc
        for obj in ev.objects:
            assert not await object_exists(blobs, obj.key)
    assert not await object_exists(blobs, stray)
    for ev in (live, forever):
        assert (await repo.get(ev.message_id))["state"] == "stored"
        for obj in ev.objects:
            assert await object_exists(blobs, obj.key)
    # Nothing left to do: a second run purges nothing.
    assert await service.purge_expired(messages=repo, claims=claims, blobs=blobs, owner="r0",
                                       lease_s=60, limit=100) == 0
    assert await mongo_db["purge_claims"].count_documents({}) == 0


async def test_abandoned_purge_claim_is_taken_over_after_its_lease(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    now = datetime.now(UTC)
    ev = await record_staged(blobs, settings, publisher, repo,
                             expires_at=now - timedelta(seconds=1))
    # A replica claimed it and died before deleting anything.
    claims = MongoPurgeClaims(mongo_db)
    assert await claims.claim(ev.message_id, owner="dead", now=now,
                              lease_until=now + timedelta(seconds=30))
    await repo.mark_purging(ev.message_id, owner="dead", lease_until=now + timedelta(seconds=30))
    assert await service.purge_expired(messages=repo, claims=claims, blobs=blobs, owner="alive",
                                       lease_s=30, limit=10, now=now) == 0
    assert (await repo.get(ev.message_id))["state"] == "purging"
    assert await object_exists(blobs, ev.objects[0].key)
    later = now + timedelta(seconds=31)
    assert await service.purge_expired(messages=repo, claims=claims, blobs=blobs, owner="alive",
                                       lease_s=30, limit=10, now=later) == 1
    assert (await repo.get(ev.message_id))["state"] == "purged"
    assert not await object_exists(blobs, ev.objects[0].key)


async def test_worker_purges_expired_messages_on_its_interval(
        store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, settings: CommonSettings,
        blobs: S3BlobStore, publisher: bus.EventPublisher, mongo_db: Any) -> None:
    monkeypatch.setenv("SECMSG_STORE_EXPIRY_INTERVAL_S", "0.2")
    ev = await stage_message(blobs, settings,
                             expires_at=datetime.now(UTC) + timedelta(seconds=1))
    app: AsgiFastStream = create_app()
    async with TestApp(app):
        await publish_received(publisher, ev)
        doc = await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one(
            {"_id": ev.message_id, "state": "purged"}))
    assert doc["purged_at"] >= doc["expires_at"]
    for obj in ev.objects:
        assert not await object_exists(blobs, obj.key)


async def test_orphan_sweep_removes_only_orphans(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    kept = await record_staged(blobs, settings, publisher, repo)
    never_recorded = await stage_message(blobs, settings)  # ingest crashed before publishing
    loser = f"t/{TENANT}/m/{kept.message_id}/{uuid.uuid4().hex}"  # losing upload attempt
    other_tenant = f"t/other/m/{kept.message_id}/{kept.objects[0].object_id}"
    not_ours = "t/readme.txt"
    outside = f"x/{uuid.uuid4().hex}"
    for key in (loser, other_tenant, not_ours, outside):
        await blobs.put_bytes(key, b"z" * 10)

    # With the default-like grace nothing is old enough to touch.
    counts = await service.sweep_orphans(messages=repo, blobs=blobs, grace_s=3600)
    assert counts["deleted"] == 0 and counts["young"] == counts["scanned"] - 1

    counts = await service.sweep_orphans(messages=repo, blobs=blobs, grace_s=0,
                                         now=datetime.now(UTC) + timedelta(seconds=5))
    assert counts["deleted"] == 2 + 2  # never-recorded message's two objects, loser, foreign
    assert counts["kept"] == 2 and counts["unknown"] == 1
    for obj in kept.objects:
        assert await object_exists(blobs, obj.key)
    for obj in never_recorded.objects:
        assert not await object_exists(blobs, obj.key)
    assert not await object_exists(blobs, loser)
    assert not await object_exists(blobs, other_tenant)
    assert await object_exists(blobs, not_ours)
    assert await object_exists(blobs, outside)


async def test_tenant_retention_purges_old_messages_without_an_expiry(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    from secmsg.store.adapters.mongo import MongoTenantPolicies

    repo = MongoMessageRepo(mongo_db)
    now = datetime.now(UTC)
    await mongo_db[mongo.TENANTS].insert_many([
        {"_id": TENANT, "policy": {"retention_days": 7}},
        {"_id": "other", "policy": {"retention_days": None}}])

    async def aged(days: float, tenant: str = TENANT) -> Any:
        ev = await stage_message(blobs, settings, tenant=tenant)
        ev = ev.model_copy(update={"occurred_at": now - timedelta(days=days)})
        await service.record_message(event=ev, messages=repo, blobs=blobs, publisher=publisher)
        return ev

    old, young = await aged(8), await aged(6)
    old_elsewhere = await aged(400, tenant="other")  # no retention policy: kept
    tenants, claims = MongoTenantPolicies(mongo_db), MongoPurgeClaims(mongo_db)
    kw: dict[str, Any] = {"messages": repo, "tenants": tenants, "claims": claims,
                          "blobs": blobs, "owner": "r", "lease_s": 30, "limit": 100}
    assert await service.purge_retained(**kw) == 1
    assert (await repo.get(old.message_id))["state"] == "purged"
    for obj in old.objects:
        assert not await object_exists(blobs, obj.key)
    for ev in (young, old_elsewhere):
        assert (await repo.get(ev.message_id))["state"] == "stored"
        assert await object_exists(blobs, ev.objects[0].key)
    assert await service.purge_retained(**kw) == 0


async def test_a_stop_during_the_first_round_of_the_background_loops_returns(
        store_env: dict[str, str], nc: Any) -> None:
    """A stop that lands while the purge loops run their first round (start, one request,
    stop: what a pod killed at once does). A cancel swallowed inside the driver call used to
    leave the loop sleeping a whole interval (an hour here) and the stop waiting on it."""
    import httpx

    for _ in range(3):  # the window is a first round; a few tries make a hit likely
        app = create_app()
        ctx = TestApp(app)
        await ctx.__aenter__()
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
            assert (await http.get("/healthz")).status_code == 200
        stop = asyncio.create_task(ctx.__aexit__(None, None, None))
        done, _ = await asyncio.wait([stop], timeout=60)  # a hang, not a speed check
        assert done, "store's stop hung"
        assert stop.exception() is None


async def test_a_purge_loop_runs_again_at_once_while_a_run_fills_its_batch() -> None:
    """The retention purge runs every 15 minutes by default (its read is a scan on
    FerretDB/SQLite); a backlog must not wait an interval per batch: a run that purged a
    whole batch is followed by the next at once, one that did not waits the interval."""
    from secmsg.store.app import _every

    results = iter([500, 500, 12, 500])
    runs: list[int] = []

    async def job() -> int:
        runs.append(next(results))
        return runs[-1]

    loop = asyncio.create_task(_every(3600, "retention purge", job,
                                      again=lambda n: n >= 500))
    await asyncio.sleep(0.5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert runs == [500, 500, 12]  # the fourth waits the hour


async def test_a_failing_purge_run_waits_the_interval() -> None:
    from secmsg.store.app import _every

    runs = 0

    async def job() -> int:
        nonlocal runs
        runs += 1
        raise RuntimeError("database down")

    loop = asyncio.create_task(_every(3600, "retention purge", job, again=lambda _: True))
    await asyncio.sleep(0.3)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert runs == 1


async def test_the_running_store_works_off_an_expiry_backlog_in_batches_without_waiting(
        store_env: dict[str, str], settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store process's own loop: five expired messages, two per run, an hour between
    runs -- all five are purged within seconds, run after run, not one batch an hour."""
    monkeypatch.setenv("SECMSG_STORE_EXPIRY_BATCH", "2")
    repo = MongoMessageRepo(mongo_db)
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = [await record_staged(blobs, settings, publisher, repo, expires_at=past)
               for _ in range(5)]
    app = create_app()
    async with TestApp(app):
        async def all_purged() -> bool:
            states = [(await repo.get(ev.message_id))["state"] for ev in expired]
            return states == ["purged"] * len(expired)
        await wait_for(all_purged, timeout=30)
