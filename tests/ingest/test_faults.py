"""A dependency down: 503 with a clear reason, and nothing half-stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.servers import Server, Stack
from tests.ingest.conftest import Ingest, att, env_part, envelope

PARTS = [env_part(envelope()), att("a.bin", b"a" * 5000)]


@pytest.fixture
def restart_after(stack: Stack) -> Iterator[list[Server]]:
    stopped: list[Server] = []
    yield stopped
    for srv in stopped:
        srv.start()


async def test_nats_down_is_503_and_leaves_no_objects(ingest: Ingest, nats_server: Server
                                                      ) -> None:
    r = await ingest.probes.get("/readyz")
    assert r.status_code == 200, r.text
    nats_server.stop()
    r = await ingest.post(PARTS)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "dependency_unavailable"
    assert "event bus" in r.json()["detail"]
    assert await ingest.keys() == []
    r = await ingest.probes.get("/readyz")
    assert r.status_code == 503 and "nats" in r.json()["reasons"]
    nats_server.start()
    assert await ingest.events() == []


async def test_s3_down_is_503(ingest: Ingest, stack: Stack, restart_after: list[Server]
                              ) -> None:
    restart_after.append(stack.s3)
    stack.s3.stop()
    r = await ingest.post(PARTS)
    assert r.status_code == 503, r.text
    assert "object store" in r.json()["detail"]
    r = await ingest.probes.get("/readyz")
    assert r.status_code == 503 and "s3" in r.json()["reasons"]
    stack.s3.start()
    restart_after.clear()
    await ingest.assert_nothing_stored()


async def test_mongo_down_is_503(ingest: Ingest, stack: Stack, restart_after: list[Server]
                                 ) -> None:
    restart_after.append(stack.mongo)
    stack.mongo.stop()
    r = await ingest.post(PARTS)
    assert r.status_code == 503, r.text
    assert "database" in r.json()["detail"]
    stack.mongo.start()
    restart_after.clear()
    await ingest.assert_nothing_stored()


async def test_unconfirmed_publish_keeps_objects_and_a_retry_cannot_double(
        ingest: Ingest, nats_server: Server) -> None:
    """NATS frozen (SIGSTOP) after receiving the publish: the ack never comes in time. The
    event may be in the stream, so the objects it names must survive; a retry with the same
    Idempotency-Key must end with one event and one set of objects."""
    import asyncio
    import signal

    assert nats_server.proc is not None
    nats_server.proc.send_signal(signal.SIGSTOP)
    try:
        r = await ingest.post(PARTS, **{"Idempotency-Key": "frozen-1"})
    finally:
        nats_server.proc.send_signal(signal.SIGCONT)
    assert r.status_code == 503, r.text
    kept = await ingest.keys()
    assert kept, "objects of a possibly-published event were deleted"

    # The frozen server processes the publish once it runs again.
    for _ in range(50):
        events = await ingest.events()
        if events:
            break
        await asyncio.sleep(0.1)
    assert len(events) == 1
    assert {o.key for o in events[0].objects} == set(kept)

    retry = None
    for _ in range(50):  # the client may need to reconnect first
        retry = await ingest.post(PARTS, **{"Idempotency-Key": "frozen-1"})
        if retry.status_code == 202:
            break
        await asyncio.sleep(0.2)
    assert retry is not None and retry.status_code == 202, retry.text
    assert retry.json()["message_id"] == events[0].message_id
    assert len(await ingest.events()) == 1
    assert set(await ingest.keys()) == set(kept), "the retry's copies must be removed"
