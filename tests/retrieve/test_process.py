"""retrieve as a real process over HTTPS: sign-in, read, download, a tampered stream aborted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from secmsg.shared.blobstore import CHUNK
from secmsg.shared.crypto import TAG_SIZE
from tests.retrieve.helpers import BOB, SEGMENT, TENANT, Seeder, bearer, last_code


async def test_https_sign_in_read_and_download(services: Callable[..., ServiceProc],
                                               seeder: Seeder, sink: Sink) -> None:
    small = os.urandom(3 * SEGMENT + 17)
    big = os.urandom(CHUNK + 200 * SEGMENT)
    msg = await seeder.message(text="hello over TLS",
                               attachments=[("small.bin", "application/octet-stream", small),
                                            ("big.bin", "application/octet-stream", big)])
    small_id, big_id = list(msg.attachments)
    svc = services("retrieve")
    assert svc.base_url.startswith("https://")

    async with httpx.AsyncClient(base_url=svc.base_url, verify=False, timeout=20) as client:
        async with httpx.AsyncClient(base_url=svc.internal_url, timeout=20) as internal:
            assert (await internal.get("/readyz")).status_code == 200
            assert (await internal.get("/healthz")).status_code == 200
            assert "secmsg_retrieve_requests_total" in (await internal.get("/metrics")).text
        # The public HTTPS port (the one the Ingress exposes) has no probes and no metrics.
        for path in ("/metrics", "/readyz", "/healthz"):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
        r = await client.post("/v1/auth/code", json={"tenant_id": TENANT, "email": BOB})
        assert r.status_code == 202
        code = None
        for _ in range(100):  # the email goes out after the response, in the background
            if sink.handler.for_recipient(BOB):
                code = last_code(sink, BOB)
                break
            await _sleep(0.05)
        assert code is not None
        r = await client.post("/v1/auth/session",
                              json={"tenant_id": TENANT, "email": BOB, "code": code})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert "strict-transport-security" in r.headers

        r = await client.get(f"/v1/messages/{msg.message_id}", headers=bearer(token))
        assert r.status_code == 200 and r.json()["text"] == "hello over TLS"
        base = f"/v1/messages/{msg.message_id}/attachments"
        r = await client.get(f"{base}/{small_id}", headers=bearer(token))
        assert r.status_code == 200 and r.content == small
        r = await client.get(f"{base}/{big_id}",
                             headers={**bearer(token), "Range": f"bytes={SEGMENT - 3}-"})
        assert r.status_code == 206 and r.content == big[SEGMENT - 3:]

        # Break a segment that is read after the first S3 chunk: the status line and the
        # first bytes are out, then the server must cut the connection, never send garbage.
        last = len(big) // SEGMENT - 1
        await seeder.tamper(msg.key(big_id), last * (SEGMENT + TAG_SIZE) + 1)
        received = bytearray()
        with pytest.raises(httpx.TransportError):
            async with client.stream("GET", f"{base}/{big_id}", headers=bearer(token)) as resp:
                assert resp.status_code == 200
                async for chunk in resp.aiter_raw():
                    received += chunk
        assert len(received) < len(big)
        assert big.startswith(bytes(received))


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_refuses_to_start_without_tls(env: dict[str, Any]) -> None:
    clean = {k: v for k, v in {**os.environ, **env}.items()
             if k not in ("SECMSG_RETRIEVE_TLS_CERT", "SECMSG_RETRIEVE_TLS_KEY")}
    proc = subprocess.run([sys.executable, "-m", "secmsg.retrieve"], env=clean,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "SECMSG_RETRIEVE_TLS_CERT" in proc.stderr
