"""The platform on a 3-node JetStream cluster (three nats-server processes with routes).

* the stream and the claims bucket are created with 3 replicas, and keep them when every
  service restarts with the setting back at 1 (a start never lowers replication);
* killing (SIGKILL) the node leading the stream in the middle of 500 messages loses none and
  sends none twice (counted at the SMTP sink by recipient and Message-ID);
* the killed node, started again, rejoins and catches up (every replica current, no lag).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo

from devstack.servers import NatsCluster
from secmsg.shared import bus, subjects
from secmsg.shared.bus_users import ADMIN, DELIVERIES_BUCKET
from tests.consumers import settled
from tests.e2e.helpers import Platform, eventually

N = 500
pytestmark = pytest.mark.slow  # ~1.5 min; CI runs slow tests too (no -m filter)
STREAMS = (subjects.STREAM, f"KV_{DELIVERIES_BUCKET}")


async def _info(nc: NATS, stream: str) -> StreamInfo:
    """Stream info, riding out a leader election (the API is briefly unavailable)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await nc.jetstream(timeout=2).stream_info(stream)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _assert_three_replicas(nc: NATS) -> None:
    for stream in STREAMS:
        info = await _info(nc, stream)
        assert info.config.num_replicas == 3, (stream, info.config.num_replicas)
        assert info.cluster is not None and info.cluster.leader
        assert len(info.cluster.replicas or []) == 2, (stream, info.cluster)


async def _all_current(nc: NATS, nodes: set[str]) -> bool:
    """Every node holds every stream, and the followers are current with no lag."""
    for stream in STREAMS:
        info = await _info(nc, stream)
        assert info.cluster is not None
        peers = {info.cluster.leader} | {p.name for p in info.cluster.replicas or []}
        if peers != nodes or any(not p.current or p.offline or (p.lag or 0) > 0
                                 for p in info.cluster.replicas or []):
            return False
    return True


async def _submit(http: httpx.AsyncClient, platform: Platform, i: int,
                  refused: collections.Counter[int]) -> str:
    """Submit message ``i`` to its own recipient; retried with the same Idempotency-Key
    while the bus elects a new leader (503) or the first attempt is still live (409)."""
    body = {"from": "alice@acme.example", "to": [f"r{i}@example.org"],
            "subject": f"Cluster {i}", "text": f"message {i}"}
    headers = {"Authorization": f"Bearer {platform.api_key}",
               "Idempotency-Key": f"cluster-load-{i}"}
    deadline = time.monotonic() + 120
    while True:
        r = await http.post("/v1/messages", headers=headers, files=[
            ("envelope", (None, json.dumps(body).encode(), "application/json"))])
        if r.status_code == 202:
            return str(r.json()["message_id"])
        assert r.status_code in (409, 429, 503), (r.status_code, r.text)
        refused[r.status_code] += 1
        assert time.monotonic() < deadline, f"message {i} still refused: {r.text}"
        await asyncio.sleep(0.5)


async def test_platform_on_a_three_node_cluster(platform: Platform,
                                                nats_server: NatsCluster) -> None:
    cluster = nats_server
    # Credentials as options, not in the URLs: a reconnect may go to a node learnt from the
    # cluster, whose URL carries none.
    nc = await nats.connect(bus.servers(cluster.url()), user=ADMIN,
                            password=cluster.passwords[ADMIN], connect_timeout=2,
                            reconnect_time_wait=0.5, max_reconnect_attempts=-1)
    try:
        # 1. Created with 3 replicas; every service restarting with the setting at 1 keeps 3.
        await _assert_three_replicas(nc)
        for name, proc in platform.procs.items():
            proc.extra_env.update(SECMSG_NATS_STREAM_REPLICAS="1",
                                  SECMSG_NATS_KV_REPLICAS="1")
            proc.restart(timeout=60)
            await _assert_three_replicas(nc)
            assert "keeping 3" in proc.log_path.read_text(), f"{name} did not say so"

        # 2. 500 messages; the stream leader's node is killed once a third went in.
        ids: dict[int, str] = {}
        refused: collections.Counter[int] = collections.Counter()
        sem = asyncio.Semaphore(12)

        async def one(i: int) -> None:
            async with sem:
                ids[i] = await _submit(http, platform, i, refused)

        async with httpx.AsyncClient(base_url=platform.ingest_url, timeout=60) as http:
            tasks = [asyncio.create_task(one(i)) for i in range(N)]
            await eventually(lambda: len(ids) >= N // 3, timeout=120, what="a third submitted")
            info = await _info(nc, subjects.STREAM)
            assert info.cluster is not None and info.cluster.leader
            killed = cluster.node(info.cluster.leader)
            killed.kill()
            at_kill, t_kill = len(ids), time.monotonic()
            assert at_kill < N, "the leader must die while messages are still coming in"
            await asyncio.gather(*tasks)
        print(f"killed {killed.name} (stream leader) after {at_kill} of {N} submitted; "
              f"the rest took {time.monotonic() - t_kill:.1f}s; answers retried: "
              f"{dict(refused)}")
        assert len(set(ids.values())) == N

        await eventually(lambda: all(platform.sink.handler.for_recipient(f"r{i}@example.org")
                                     for i in range(N)),
                         timeout=180, what="a notification for every message")
        # notify's consumers acknowledged everything: no late duplicate can come.
        await eventually(lambda: settled(nc), timeout=120, what="notify's consumers settled")
        seen = collections.Counter(
            (m.message["Message-ID"], rcpt)
            for m in platform.sink.messages for rcpt in m.rcpt_tos)
        assert [k for k, n in seen.items() if n > 1] == [], "notifications sent twice"
        for i in range(N):
            mails = platform.sink.handler.for_recipient(f"r{i}@example.org")
            assert len(mails) == 1, (i, len(mails))
            assert mails[0].message["X-Secure-Message-Id"] == ids[i]

        # 3. The killed node comes back and catches up with both streams.
        new_leader = (await _info(nc, subjects.STREAM)).cluster
        assert new_leader is not None and new_leader.leader != killed.name
        killed.start()
        nodes = {n.name for n in cluster.nodes}
        await eventually(lambda: _all_current(nc, nodes), timeout=60,
                         what=f"{killed.name} current again on every stream")
        await _assert_three_replicas(nc)
    finally:
        await nc.close()
