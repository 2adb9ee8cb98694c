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
    letters = await eventually(
        lambda: _two(nbus), what="both poison messages dead-lettered")
    assert {d.subject for d in letters} == {f"secmsg.{tenant}.message.stored",
                                           f"notify.retry.{tenant}"}
    assert {d.service for d in letters} == {"notify"}
    # Store owns dead_letters: notify hands its letters over and writes none itself.
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0
    hot = await js.consumer_info(subjects.STREAM, subjects.NOTIFY_STORED)
    assert hot.config.max_deliver == 4 + worker.RECORD_RETRIES


async def _two(nbus: Bus) -> list[worker.DeadLetterRecorded] | None:
    """The dead letters notify handed to store (``secmsg._ops.dead_letter.recorded``)."""
    js = nbus.nc.jetstream()
    sub = await js.subscribe(subjects.DEAD_LETTER_RECORDED, stream=subjects.STREAM,
                             ordered_consumer=True)
    letters: list[worker.DeadLetterRecorded] = []
    try:
        while len(letters) < 2:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                break
            letters.append(worker.DeadLetterRecorded.model_validate_json(msg.data))
    finally:
        await sub.unsubscribe()
    return letters if len(letters) == 2 else None
