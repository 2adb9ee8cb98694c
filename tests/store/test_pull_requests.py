"""Store's batch consumers and the pull requests they send NATS (real NATS + FerretDB).

A batch consumer waits ``SECMSG_STORE_DELIVERY_BATCH_WAIT_S`` (0.1 s) for a batch to fill.
It used to send a pull request every batch wait even with nothing to do (ten a second per
consumer, most of NATS's messages per submitted message in bench.cost); now its first fetch
waits ``FETCH_TIMEOUT_S`` for an event, and only then tops the batch up within the batch wait.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faststream.asgi import AsgiFastStream
from faststream.nats import TestApp
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from secmsg.shared import bus, mongo, subjects
from secmsg.shared.events import MessageOpened
from secmsg.store.app import create_app
from tests.store.helpers import TENANT, wait_for

BATCH_CONSUMERS = (subjects.STORE_RECEIVED, subjects.STORE_DELIVERY, subjects.STORE_AUDIT)
NEXT = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.STREAM}."


@pytest.fixture
async def long_idle_app(store_env: dict[str, str],
                        monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsgiFastStream]:
    # The production default (5 s): the idle wait is the fetch timeout.
    monkeypatch.setenv("SECMSG_STORE_FETCH_TIMEOUT_S", "5")
    a = create_app()
    async with TestApp(a):
        yield a


async def _pull_requests(nc: NATS) -> tuple[Counter[str], Any]:
    counts: Counter[str] = Counter()

    async def seen(msg: Msg) -> None:
        counts[msg.subject.removeprefix(NEXT)] += 1

    sub = await nc.subscribe(NEXT + ">", cb=seen)
    return counts, sub


async def test_an_idle_batch_consumer_sends_one_pull_request_per_fetch_timeout(
        long_idle_app: AsgiFastStream, nc: NATS, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    counts, sub = await _pull_requests(nc)
    try:
        await asyncio.sleep(2.0)  # idle: 20 batch waits of 0.1 s
        idle = dict(counts)
        # At most the one open request each (made before or during the window), and maybe one
        # that was answered at a consumer's start; the old loop sent about 20 here.
        for durable in BATCH_CONSUMERS:
            assert counts[durable] <= 2, idle

        # Events still arrive at once and in batches: a burst of audit events is recorded.
        events = [MessageOpened(tenant_id=TENANT, message_id=uuid.uuid4().hex,
                                event_id=f"pull-{n}-{uuid.uuid4().hex[:8]}",
                                recipient=f"r{n}@example.org") for n in range(20)]
        counts.clear()
        await asyncio.gather(*(publisher.publish(ev, f"{ev.event_id}:opened")
                               for ev in events))
        ids = [ev.event_id for ev in events]

        async def recorded() -> bool:
            n = await mongo_db[mongo.AUDIT].count_documents({"event_id": {"$in": ids}})
            return bool(n == len(ids))

        await wait_for(recorded)
        # Fewer pull requests than events: they came in batches.
        assert counts[subjects.STORE_AUDIT] < len(events), dict(counts)
    finally:
        await sub.unsubscribe()
