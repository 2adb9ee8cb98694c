"""worker.EventWorker's pull loops against a real NATS: a pull request that ends early (nats-py
raises asyncio's ``TimeoutError`` for it, which FastStream's loop does not catch) must not
lose the events a batch round already gathered -- they were delivered and, lost, came back
only after the consumer's ack wait (store's 30 s stalls and redeliveries in bench.cost)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker
from nats.js.client import JetStreamContext

from devstack.servers import NatsServer
from secmsg.shared import bus, subjects, worker
from secmsg.shared.events import MessageStored, event_msg_id

pytestmark = pytest.mark.timeout(120)

# Longer than any wait below: a lost event would come back only after it, as delivery 2.
ACK_WAIT_S = 30.0


def stored(n: int) -> MessageStored:
    return MessageStored(tenant_id="acme", message_id=f"m{n}-{uuid.uuid4().hex[:8]}",
                         sender="a@acme.example", recipients=[], subject="s",
                         attachment_count=0, received_at=datetime.now(UTC))


@pytest.fixture
def early_end(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every second multi-message pull request ends the way nats-py's ``_fetch_n`` ends one
    whose wait ran out between its two requests: ``raise asyncio.TimeoutError``."""
    real = JetStreamContext.PullSubscription._fetch_n
    calls: list[int] = []

    async def fetch_n(self: Any, batch: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(batch)
        if len(calls) % 2 == 0:
            raise TimeoutError  # asyncio.TimeoutError is this builtin
        return await real(self, batch, *args, **kwargs)

    monkeypatch.setattr(JetStreamContext.PullSubscription, "_fetch_n", fetch_n)
    return calls


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[NatsBroker]:
    url = nats_server.url("admin")
    nc = await bus.connect(url, "test-setup")
    await bus.ensure_stream(nc)
    await nc.close()
    b = NatsBroker(url)
    yield b
    await b.stop()


class Sink:
    async def record(self, letter: worker.DeadLetter) -> None:
        raise AssertionError(f"unexpected dead letter: {letter.reason}")


@pytest.mark.parametrize("idle_wait_s", [None, 5.0], ids=["batch-wait-only", "long-poll"])
async def test_a_pull_request_ending_early_loses_no_gathered_events(
        broker: NatsBroker, early_end: list[int], idle_wait_s: float | None) -> None:
    events = worker.EventWorker(broker, service="t", dead_letters=Sink,
                                policy=worker.DeliveryPolicy(ack_wait_s=ACK_WAIT_S))
    seen: dict[str, int] = {}
    done = asyncio.Event()
    sent = [stored(n) for n in range(12)]

    @events.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="pulls",
                       batch_size=100, fetch_timeout_s=0.5, batch=True, idle_wait_s=idle_wait_s)
    async def on_stored(batch: list[MessageStored]) -> None:
        msgs = broker.context.get_local("message").raw_message
        for ev, raw in zip(batch, msgs, strict=True):
            seen[ev.message_id] = raw.metadata.num_delivered
        if len(seen) >= len(sent):
            done.set()

    await broker.start()
    await events.ensure_consumers(broker.connection)
    pub = bus.EventPublisher(broker.connection)
    for ev in sent:  # one at a time, so a round gathers them over several pull requests
        await pub.publish(ev, event_msg_id(ev))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(done.wait(), timeout=ACK_WAIT_S - 5)  # before any redelivery
    assert len(early_end) >= 2  # the early end really happened
    assert set(seen) == {ev.message_id for ev in sent}
    assert all(n == 1 for n in seen.values()), seen  # each handled on its first delivery


async def test_events_queued_for_a_free_handler_are_kept_alive_past_the_ack_wait(
        broker: NatsBroker) -> None:
    """A replica fetches more events than it has free handlers (FastStream queues them in
    memory). Those wait longer than a short ack wait when handlers are slow, and came back as
    copies of events about to be handled; ``keep_alive_held`` reports them in progress."""
    ack_wait = 3.0
    events = worker.EventWorker(broker, service="t", dead_letters=Sink,
                                policy=worker.DeliveryPolicy(ack_wait_s=ack_wait))
    handled: list[tuple[str, int]] = []
    sent = [stored(n) for n in range(8)]

    @events.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="held",
                       batch_size=8, fetch_timeout_s=1, max_workers=2, keep_alive_held=True)
    async def on_stored(event: MessageStored) -> None:
        raw = broker.context.get_local("message").raw_message
        handled.append((event.message_id, raw.metadata.num_delivered))
        await asyncio.sleep(1.2)  # two handlers, eight events: the last two wait 3.6 s

    pub = bus.EventPublisher(await _connected(broker))
    for ev in sent:
        await pub.publish(ev, event_msg_id(ev))
    await broker.start()
    await events.ensure_consumers(broker.connection)

    js = broker.connection.jetstream()

    async def settled() -> bool:
        info = await js.consumer_info(subjects.STREAM, "held")
        return info.num_pending == 0 and info.num_ack_pending == 0 and len(handled) >= 8

    for _ in range(400):
        if await settled():
            break
        await asyncio.sleep(0.05)
    assert sorted(m for m, _ in handled) == sorted(ev.message_id for ev in sent), handled
    assert all(n == 1 for _, n in handled), handled  # none came back as a copy


async def _connected(broker: NatsBroker) -> Any:
    await broker.connect()
    return broker.connection
