"""Store fixtures: fast retry settings, an S3 client, a NATS connection with the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faststream.asgi import AsgiFastStream
from faststream.nats import TestApp
from nats.aio.client import Client as NATS

from secmsg.shared import bus
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings
from secmsg.store.app import create_app

# Short retry and polling settings so a test never waits on production back-off.
FAST = {
    "SECMSG_STORE_BACKOFF_BASE_S": "0.1",
    "SECMSG_STORE_BACKOFF_CAP_S": "0.5",
    "SECMSG_STORE_FETCH_TIMEOUT_S": "0.5",
    "SECMSG_STORE_ACK_WAIT_S": "3",
    "SECMSG_STORE_GRACEFUL_TIMEOUT_S": "5",
    "SECMSG_STORE_EXPIRY_INTERVAL_S": "3600",
    "SECMSG_STORE_RETENTION_INTERVAL_S": "3600",
    "SECMSG_STORE_ORPHAN_SWEEP_INTERVAL_S": "3600",
}


@pytest.fixture
def store_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    return {**env, **FAST}


@pytest.fixture
async def blobs(settings: CommonSettings) -> S3BlobStore:
    b = S3BlobStore.from_settings(settings)
    await b.ensure_bucket()
    return b


@pytest.fixture
async def nc(settings: CommonSettings) -> AsyncIterator[NATS]:
    conn = await bus.connect(settings.nats_url, "store-tests")
    await bus.ensure_stream(conn)
    yield conn
    await conn.close()


@pytest.fixture
def publisher(nc: NATS) -> bus.EventPublisher:
    return bus.EventPublisher(nc)


@pytest.fixture
async def store_app(store_env: dict[str, str]) -> AsyncIterator[AsgiFastStream]:
    """The store worker in this process, against the real servers of this test."""
    app = create_app()
    async with TestApp(app):
        yield app
