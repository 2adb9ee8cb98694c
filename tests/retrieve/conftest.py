"""Fixtures for retrieve: data seeded the way store writes it, and the app run in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from secmsg.retrieve.app import create_app
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings
from tests.retrieve.helpers import OTHER_TENANT, TENANT, Running, Seeder


@pytest.fixture
async def blobs(settings: CommonSettings) -> S3BlobStore:
    store = S3BlobStore.from_settings(settings)
    await store.ensure_bucket()
    return store


@pytest.fixture
async def seeder(settings: CommonSettings, mongo_db: Any, blobs: S3BlobStore) -> Seeder:
    s = Seeder(settings, mongo_db, blobs)
    await s.tenant(TENANT, "ACME Medical")
    await s.tenant(OTHER_TENANT, "Globex")
    return s


@pytest.fixture
async def make_app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                   mongo_db: Any) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Factory: the app in-process (lifespan run) with extra SECMSG_RETRIEVE_* settings."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Running:
        monkeypatch.setenv("SECMSG_RETRIEVE_PUBLISH_TIMEOUT_S", "1")
        for k, v in overrides.items():
            monkeypatch.setenv(f"SECMSG_RETRIEVE_{k.upper()}", str(v))
        app = create_app()
        ctx = app.router.lifespan_context(app)
        await ctx.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="https://testserver")
        probes = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.state.probes),
                                   base_url="http://internal")
        opened.append((ctx, client))
        opened.append((None, probes))
        return Running(client, app.state.deps, probes)

    yield start
    for ctx, client in reversed(opened):
        await client.aclose()
        if ctx is not None:
            await ctx.__aexit__(None, None, None)


@pytest.fixture
async def app(make_app: Callable[..., Awaitable[Running]]) -> Running:
    return await make_app()
