"""``python -m secmsg.ops.migrate`` (the upgrade Job) against a fresh database, JetStream and
bucket: it leaves what the services need, twice in a row, and names a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import nats
from minio import Minio

from devstack.servers import NatsServer, free_port
from secmsg.shared.bus_users import ADMIN
from secmsg.shared.settings import CommonSettings
from tests.deploy.conftest import ROOT


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secmsg.ops.migrate"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


async def test_migrate_prepares_indexes_streams_and_bucket_idempotently(
        env: dict[str, str], nats_server: NatsServer, settings: CommonSettings,
        mongo_db: Any) -> None:
    # As the Job runs it: notify's NATS user (it may manage both streams).
    job_env = {**env, **nats_server.service_env("notify")}
    db = mongo_db  # the test's own fresh database
    # What an earlier release left: a retired index, and one an operator added themselves.
    await db["messages"].create_index([("expires_at", 1), ("state", 1)], name="expiry")
    await db["messages"].create_index([("sender", 1)], name="operator_sender")
    outputs = []
    for _ in range(2):
        done = migrate(job_env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("migrate: done")
        outputs.append(done.stdout)
    assert "dropped messages.expiry" in outputs[0]
    assert "dropped" not in outputs[1]  # idempotent: nothing left to drop
    for collection in ("api_keys", "messages", "sessions"):
        names = [ix["name"] async for ix in await db[collection].list_indexes()]
        assert len(names) > 1, (collection, names)  # more than _id_
    names = [ix["name"] async for ix in await db["messages"].list_indexes()]
    assert "expiry" not in names
    assert {"tenant_state_received", "operator_sender"} <= set(names), names
    nc = await nats.connect(nats_server.url(ADMIN))
    try:
        js = nc.jetstream()
        assert (await js.stream_info("SECMSG")).config.name == "SECMSG"
        assert (await js.stream_info("NOTIFY_RETRY")).config.name == "NOTIFY_RETRY"
    finally:
        await nc.close()
    s3 = Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
               secret_key=settings.s3_secret_key, secure=False)
    assert s3.bucket_exists(settings.s3_bucket)


def test_migrate_names_what_failed(env: dict[str, str]) -> None:
    done = migrate({**env, "SECMSG_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/",
                    "SECMSG_MONGO_TIMEOUT_MS": "500"})
    assert done.returncode == 1
    assert "migrate failed" in done.stderr and "ingest indexes" in done.stdout
