"""Ingest test fixtures: the app in-process against this test's real servers, and helpers to
build multipart bodies by hand and to inspect what reached the object store and NATS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.servers import Stack
from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.ingest.app import create_app
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.events import MessageReceived
from secmsg.shared.settings import CommonSettings
from tests.ingest.access_helpers import published

TENANT = "acme"
BOUNDARY = "secmsgtestboundary7MA4YWxkTrZu0gW"
LIMITS = {"max_message_bytes": 200_000, "max_recipients": 3, "max_attachments": 4,
          "max_envelope_bytes": 4096}
FAST_ENV = {
    "SECMSG_INGEST_SEGMENT_SIZE": "1024",
    # These tests follow content into S3; tests/ingest/test_inline.py turns inline back on.
    "SECMSG_INGEST_INLINE_MAX_BYTES": "0",
    "SECMSG_INGEST_PUBLISH_TIMEOUT_S": "1",
    "SECMSG_MONGO_TIMEOUT_MS": "1500",
}

Part = tuple[str, str | None, str | None, bytes]  # name, filename, content type, data


def envelope(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"from": "alice@acme.example", "to": ["bob@example.org"],
                            "subject": "Hello", "text": "hello bob"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def env_part(env: dict[str, Any] | bytes) -> Part:
    data = env if isinstance(env, bytes) else json.dumps(env).encode()
    return ("envelope", None, "application/json", data)


def att(filename: str | None, data: bytes, ctype: str | None = "application/octet-stream"
        ) -> Part:
    return ("attachment", filename, ctype, data)


def multipart(parts: Iterable[Part], boundary: str = BOUNDARY, *, close: bool = True) -> bytes:
    out = bytearray()
    for name, filename, ctype, data in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += b"Content-Disposition: " + disp.encode() + b"\r\n"
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


@dataclass
class Ingest:
    client: httpx.AsyncClient
    db: Any
    settings: CommonSettings
    blobs: S3BlobStore
    api_key: str
    s3_dir: Path
    probes: httpx.AsyncClient  # the internal port's app: /healthz /readyz /metrics

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **extra}

    async def post(self, parts: Iterable[Part] | bytes, **headers: str) -> httpx.Response:
        body = parts if isinstance(parts, bytes) else multipart(parts)
        return await self.client.post("/v1/messages", content=body,
                                      headers=self.headers(**headers))

    async def keys(self) -> list[str]:
        return [k for k, _ in await self.blobs.list_keys("")]

    async def events(self) -> list[MessageReceived]:
        """The ``message.received`` events published (audit and control events left out)."""
        return [e for e in await published(self.settings) if isinstance(e, MessageReceived)]

    async def assert_nothing_stored(self) -> None:
        assert await self.keys() == [], "objects left in the bucket"
        assert await self.events() == [], "an event was published"


@pytest.fixture
def ingest_env() -> dict[str, str]:
    """Settings on top of ``FAST_ENV`` (a test module overrides this fixture)."""
    return {}


@pytest.fixture
async def ingest(env: dict[str, str], mongo_db: Any, stack: Stack, ingest_env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Ingest]:
    for k, v in {**FAST_ENV, **ingest_env}.items():
        monkeypatch.setenv(k, v)
    settings = CommonSettings()
    await create_tenant(mongo_db, tenant_id=TENANT, name="Acme Medical", **LIMITS)
    key = await create_api_key(mongo_db, tenant_id=TENANT, label="tests")
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test",
                                     timeout=30) as client, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app.state.probes),
                                  base_url="http://internal", timeout=30) as probes:
            yield Ingest(client=client, db=mongo_db, settings=settings,
                         blobs=S3BlobStore.from_settings(settings), api_key=key,
                         s3_dir=stack.s3_data_dir / settings.s3_bucket, probes=probes)
