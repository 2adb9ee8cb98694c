"""A 3-node JetStream cluster in place of the single test NATS: ``nats_server`` is the
cluster (the root ``env``/``services``/``platform`` fixtures then use it unchanged), and the
services run with 3 replicas for the stream and the KV buckets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from devstack.servers import NatsCluster, ensure_binaries, make_nats_cluster
from secmsg.shared import bus
from secmsg.shared.bus_users import ADMIN


async def wait_for_jetstream(cluster: NatsCluster, timeout: float = 60.0) -> None:
    """Until the cluster has elected its JetStream meta leader (it answers account info)."""
    nc = await nats.connect(bus.servers(cluster.url()), user=ADMIN,
                            password=cluster.passwords[ADMIN], connect_timeout=2)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.jetstream(timeout=2).account_info()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    cluster = make_nats_cluster(ensure_binaries()["nats"], tmp_path / "nats", size=3)
    cluster.start()
    try:
        await wait_for_jetstream(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    replicas = {"SECMSG_NATS_STREAM_REPLICAS": "3", "SECMSG_NATS_KV_REPLICAS": "3"}
    for k, v in replicas.items():
        monkeypatch.setenv(k, v)
    return {**env, **replicas}
