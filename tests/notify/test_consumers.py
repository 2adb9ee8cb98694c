"""notify's consumers follow the shared event contract (``worker.EventWorker``): a poison
event or retry item is dead-lettered and terminated while good ones keep flowing, and the
hot consumer carries a finite ``max_deliver``."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.notify import retry
from secmsg.shared import mongo, subjects, worker
from tests.notify.conftest import Bus, eventually, stored_event

pytestmark = pytest.mark.timeout(60)


async def test_poison_is_dead_lettered_and_good_events_flow(
        tenant: str, mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    await start_notify(SECMSG_NOTIFY_MAX_DELIVER="4")
    js = nbus.nc.jetstream()
    await js.publish(subjects.subject(tenant, subjects.MESSAGE_STORED), b'{"kind": "nope"}',
                     stream=subjects.STREAM)
    await js.publish(retry.subject(tenant), b'{"not": "a retry"}', stream=retry.STREAM)
    await nbus.publish(stored_event(to=["good@example.org"]))
    await eventually(lambda: sink.handler.for_recipient("good@example.org"),
                     what="the good event's notification")
    docs = await eventually(
        lambda: _two(mongo_db), what="both poison messages dead-lettered")
    assert {d["subject"] for d in docs} == {f"secmsg.{tenant}.message.stored",
                                           f"notify.retry.{tenant}"}
    hot = await js.consumer_info(subjects.STREAM, subjects.NOTIFY_STORED)
    assert hot.config.max_deliver == 4 + worker.RECORD_RETRIES


async def _two(db: Any) -> list[dict[str, Any]] | None:
    docs = await db[mongo.DEAD_LETTERS].find({"service": "notify"}).to_list(None)
    return docs if len(docs) == 2 else None
