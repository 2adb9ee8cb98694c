"""``bus.ensure_stream`` / ``bus.ensure_kv`` against a real NATS: a start creates what is
missing and never destroys, recreates or scales down what an operator set up. (Replicas above
1 need a cluster: tests/cluster shows them kept across every service's restart.) And the
publisher's outer bound on a publish."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig

from secmsg.shared import bus, subjects
from secmsg.shared.errors import PublishUnconfirmed
from secmsg.shared.events import MessageOpened


@pytest.fixture
async def nc(env: dict[str, str]) -> AsyncIterator[NATS]:
    conn = await bus.connect(env["SECMSG_NATS_URL"], "stream-tests")
    yield conn
    await conn.close()


async def test_a_start_keeps_the_events_and_the_operators_limits(nc: NATS) -> None:
    js = nc.jetstream()
    created = await bus.ensure_stream(nc)
    assert created.config.num_replicas == 1
    await js.publish(subjects.subject("acme", subjects.MESSAGE_STORED), b"{}",
                     stream=subjects.STREAM)
    # An operator caps the stream's size and shortens the duplicate window by hand.
    info = await js.stream_info(subjects.STREAM)
    await js.update_stream(info.config.evolve(max_bytes=64 * 1024 * 1024,
                                              duplicate_window=60.0))

    after = await bus.ensure_stream(nc)  # the next service start

    assert after.state.messages == 1, "the stream was recreated or purged"
    assert after.config.max_bytes == 64 * 1024 * 1024, "the operator's limit was reset"
    # ...but what the exactly-once design depends on is put back
    assert after.config.duplicate_window == pytest.approx(subjects.DUPLICATE_WINDOW_S)


async def test_kv_bucket_created_once_and_its_ttl_kept_current(nc: NATS) -> None:
    js = nc.jetstream()
    cfg = KeyValueConfig(bucket="STREAM_TESTS", history=1, ttl=3600.0)
    kv = await bus.ensure_kv(js, cfg)
    await kv.put("k", b"v")
    kv = await bus.ensure_kv(js, cfg.evolve(ttl=7200.0))
    assert (await kv.get("k")).value == b"v"
    assert (await js.stream_info("KV_STREAM_TESTS")).config.max_age == pytest.approx(7200.0)


def test_replicas_are_only_ever_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="secmsg.shared.bus"):
        assert bus.keep_replicas("SECMSG", 3, 1) == 3
    assert "keeping 3" in caplog.text
    assert bus.keep_replicas("SECMSG", 1, 3) == 3
    assert bus.keep_replicas("SECMSG", None, 1) == 1


async def test_a_publish_that_never_returns_is_unconfirmed_within_its_bound(nc: NATS) -> None:
    """Whatever stalls inside the client (a write during a reconnect, a lost reply), a
    submission waiting on the publish gets ``PublishUnconfirmed`` (503, objects kept) after
    the publish timeout plus one second, never an open-ended wait."""
    await bus.ensure_stream(nc)
    pub = bus.EventPublisher(nc, timeout=0.5)
    pub._js = _Stalled()  # type: ignore[assignment]
    event = MessageOpened(tenant_id="acme", message_id=uuid.uuid4().hex,
                          event_id=uuid.uuid4().hex, recipient="r@example.org")
    started = time.monotonic()
    with pytest.raises(PublishUnconfirmed):
        await asyncio.wait_for(pub.publish(event, uuid.uuid4().hex), 10)
    assert time.monotonic() - started < 5


class _Stalled:
    """A JetStream context whose publish ignores its own timeout and never returns."""

    async def publish(self, *_args: object, **_kwargs: object) -> None:
        await asyncio.Event().wait()
