"""Expired sign-in state is deleted by retrieve itself (FerretDB has no TTL indexes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from secmsg.retrieve import service
from secmsg.retrieve.adapters.mongo import MongoJanitor
from secmsg.retrieve.app import create_app
from secmsg.shared import mongo
from tests.retrieve.helpers import TENANT, Running

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # on a window boundary, so window ends are exact
NOW = T0 + timedelta(seconds=120)  # the clean-up pass runs here
USED = mongo.LOGIN_CODES_USED


async def _ids(db: Any, name: str) -> set[str]:
    return {d["_id"] async for d in db[name].find({}, projection={"_id": 1})}


async def _seed(app: Running, db: Any) -> dict[str, set[str]]:
    """Expired and live documents of every collection, written by the real adapters.

    The app runs with session_idle_s=100, session_max_s=1000. Returns the live ``_id``s."""
    d = app.deps
    # Codes: one past its expiry at NOW, one live; two consumed ones leave used-markers that
    # expire with their code.
    for who, ttl in (("old", 60), ("new", 600), ("used-old", 60), ("used-new", 600)):
        await d.codes.replace(tenant_id=TENANT, address=f"{who}@example.org", code_hash=who,
                              expires_at=T0 + timedelta(seconds=ttl), now=T0)
    for who in ("used-old", "used-new"):
        assert await d.codes.consume(tenant_id=TENANT, address=f"{who}@example.org",
                                     code_hash=who, now=T0, max_attempts=5)
    # Sessions: idle since T0 (120 s > 100 s idle), used at T0+50 (live), and one used at
    # T0+100 but past its absolute end at T0+110.
    for token, created, expires in (("idle", T0, 1000), ("live", T0, 1000),
                                    ("absolute", T0 + timedelta(seconds=30), 80)):
        await d.sessions.create(token_hash=token, tenant_id=TENANT, address="b@example.org",
                                now=created, expires_at=created + timedelta(seconds=expires))
    assert await d.sessions.touch(token_hash="live", now=T0 + timedelta(seconds=50),
                                  idle_s=100)
    assert await d.sessions.touch(token_hash="absolute", now=T0 + timedelta(seconds=100),
                                  idle_s=100)
    # Rate limits: a 60 s window that ended at T0+60, and an hour window still open.
    assert await d.limiter.hit(key="short", limit=5, window_s=60, now=T0) is None
    assert await d.limiter.hit(key="long", limit=5, window_s=3600, now=T0) is None
    return {
        mongo.LOGIN_CODES: {f"{TENANT}:new@example.org"},
        USED: {i for i in await _ids(db, USED) if "used-new" in i},
        mongo.SESSIONS: {"live"},
        mongo.RATE_LIMITS: {i for i in await _ids(db, mongo.RATE_LIMITS)
                            if i.split(":")[1] == "3600"},
    }


def _metric(collection: str) -> float:
    return REGISTRY.get_sample_value("secmsg_retrieve_cleanup_deleted_total",
                                     {"collection": collection}) or 0.0


async def test_cleanup_deletes_exactly_the_expired(make_app: Any, mongo_db: Any) -> None:
    app = await make_app(session_idle_s=100, session_max_s=1000)
    live = await _seed(app, mongo_db)
    assert all(len(ids) == 1 for ids in live.values()), live
    before = {c: _metric(c) for c in live}

    counts = await service.clean_expired(janitor=app.deps.janitor,
                                         settings=app.deps.settings, now=NOW)

    assert counts == {mongo.LOGIN_CODES: 1, USED: 1, mongo.SESSIONS: 2, mongo.RATE_LIMITS: 1,
                      mongo.DEVICE_CODES: 0, "access_markers": 0}
    for name, ids in live.items():
        assert await _ids(mongo_db, name) == ids, name
        assert _metric(name) - before[name] == counts[name]
    # The survivors still work.
    assert await app.deps.sessions.touch(token_hash="live", now=NOW, idle_s=100)
    assert await app.deps.codes.consume(tenant_id=TENANT, address="new@example.org",
                                        code_hash="new", now=NOW, max_attempts=5)
    # A second pass finds nothing more.
    again = await service.clean_expired(janitor=app.deps.janitor,
                                        settings=app.deps.settings, now=NOW)
    assert set(again.values()) == {0}


async def test_replicas_cleaning_at_once_are_harmless(make_app: Any, mongo_db: Any) -> None:
    app = await make_app(session_idle_s=100, session_max_s=1000)
    live = await _seed(app, mongo_db)
    others = [MongoJanitor(mongo_db) for _ in range(3)]
    await asyncio.gather(*(service.clean_expired(janitor=j, settings=app.deps.settings,
                                                 now=NOW)
                           for j in [app.deps.janitor, *others]))
    for name, ids in live.items():
        assert await _ids(mongo_db, name) == ids, name


async def test_periodic_task_runs_on_the_app_clock(make_app: Any, mongo_db: Any) -> None:
    app = await make_app(cleanup_interval_s=0.05)
    now = app.deps.clock()
    await app.deps.sessions.create(token_hash="old", tenant_id=TENANT, address="b@example.org",
                                   now=now, expires_at=now + timedelta(hours=12))
    assert await app.deps.limiter.hit(key="k", limit=5, window_s=3600, now=now) is None
    app.shift_clock(3601)  # past the idle timeout and the end of the hour window
    later = app.deps.clock()
    await app.deps.sessions.create(token_hash="new", tenant_id=TENANT, address="b@example.org",
                                   now=later, expires_at=later + timedelta(hours=12))
    for _ in range(200):  # until a pass has run on the shifted clock
        if await _ids(mongo_db, mongo.SESSIONS) == {"new"}:
            break
        await asyncio.sleep(0.05)
    assert await _ids(mongo_db, mongo.SESSIONS) == {"new"}
    assert await _ids(mongo_db, mongo.RATE_LIMITS) == set()


async def test_shutdown_stops_the_task(env: dict[str, str]) -> None:
    app = create_app()
    ctx = app.router.lifespan_context(app)
    before = asyncio.all_tasks()
    await ctx.__aenter__()
    started = [t for t in asyncio.all_tasks() - before if t.get_name() == "retrieve-cleanup"]
    assert len(started) == 1 and not started[0].done()
    await ctx.__aexit__(None, None, None)
    assert started[0].cancelled()
