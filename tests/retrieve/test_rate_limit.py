"""The rate limiter under concurrency, against the real MongoDB-wire server (FerretDB here).

Several clients stand in for several retrieve replicas hitting the same key at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from secmsg.retrieve.adapters.mongo import MongoRateLimiter
from secmsg.shared import mongo
from secmsg.shared.settings import CommonSettings


@pytest.mark.parametrize("round_", range(3))
async def test_concurrent_hits_admit_at_most_the_limit(settings: CommonSettings,
                                                       mongo_db: Any, round_: int) -> None:
    clients = [mongo.make_client(settings) for _ in range(4)]
    try:
        limiters = [MongoRateLimiter(c[settings.mongo_db]) for c in clients]
        now = datetime.now(UTC)
        results = await asyncio.gather(*(
            limiters[i % len(limiters)].hit(key="verify:ip:203.0.113.7", limit=10,
                                            window_s=900, now=now)
            for i in range(40)))
    finally:
        for c in clients:
            await c.close()
    admitted = sum(r is None for r in results)
    assert admitted == 10, f"{admitted} of 40 admitted with limit 10"
    assert all(r is None or 1 <= r <= 900 for r in results)


async def test_windows_and_keys_are_separate(mongo_db: Any) -> None:
    limiter = MongoRateLimiter(mongo_db)
    now = datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    for _ in range(2):
        assert await limiter.hit(key="a", limit=2, window_s=60, now=now) is None
    retry = await limiter.hit(key="a", limit=2, window_s=60, now=now)
    assert retry == 50.0
    assert await limiter.hit(key="b", limit=2, window_s=60, now=now) is None
    later = now + timedelta(seconds=60)
    assert await limiter.hit(key="a", limit=2, window_s=60, now=later) is None
