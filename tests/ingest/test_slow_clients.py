"""Slow clients against a real ingest process, from raw sockets over TCP.

80 connections of one tenant send their headers and then trickle the body a byte at a time;
a few more trickle the request head itself. While they are open, another tenant's normal
submission is accepted; the tricklers' tenant holds at most its own share of the upload
slots (the rest get 429 at once and are closed), and the ones holding a slot are cut with
408 once they fall below the minimum body rate; a request head that never completes gets 408
too. Every slow connection ends up closed by the server; afterwards the slots are free again.
An oversized request head is refused with 431.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx

from devstack.services import ServiceProc
from secmsg.ingest.admin import create_api_key, create_tenant
from tests.ingest.conftest import BOUNDARY, att, env_part, envelope, multipart

SLOW = 80
SLOW_HEADS = 5
PER_TENANT = 16  # the default SECMSG_INGEST_MAX_CONCURRENT_UPLOADS_PER_TENANT
TRICKLE_S = 0.3
BOUND_S = 60.0  # every slow connection must be closed by the server well within this


def _slow_body_head(port: int, key: str) -> bytes:
    first_part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n"
                  "Content-Type: application/json\r\n\r\n{").encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: 100000\r\n\r\n").encode()
    return head + first_part


async def _slow_client(port: int, start: bytes, trickle: bytes) -> str:
    """Send ``start``, then ``trickle`` every TRICKLE_S until the server answers (writing on
    would reset the connection and lose the answer), then read until it closes; returns the
    status line the server sent (or "reset" / "no answer")."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(start)
        await writer.drain()
        while not answer:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRICKLE_S):
                    answer = await reader.read(65536)
                    if not answer:
                        return "no answer"  # closed without a word
            if not answer:
                writer.write(trickle)
                await writer.drain()
        answer += await reader.read()  # until the server closes the connection
    except ConnectionError:
        return "reset"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


async def _submit(http: httpx.AsyncClient, key: str) -> httpx.Response:
    body = multipart([env_part(envelope()), att("f.bin", b"x" * 5000)])
    return await http.post("/v1/messages", content=body, headers={
        "Authorization": f"Bearer {key}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


async def test_slow_clients_are_cut_and_cannot_starve_other_tenants(
        services: Callable[..., ServiceProc], mongo_db: Any) -> None:
    await create_tenant(mongo_db, tenant_id="slowpoke", name="Slow Org")
    await create_tenant(mongo_db, tenant_id="other", name="Other Org")
    slow_key = await create_api_key(mongo_db, tenant_id="slowpoke")
    other_key = await create_api_key(mongo_db, tenant_id="other")
    # ~3 bytes/s against a 100 bytes/s floor: cut about 4 s into the body.
    svc = services("ingest", SECMSG_INGEST_HEADER_TIMEOUT_S=3,
                   SECMSG_INGEST_BODY_IDLE_TIMEOUT_S=4, SECMSG_INGEST_BODY_MIN_RATE=100)

    async with asyncio.timeout(BOUND_S), \
            httpx.AsyncClient(base_url=svc.base_url, timeout=30) as http:
        bodies = [asyncio.create_task(_slow_client(svc.port, _slow_body_head(svc.port, slow_key),
                                                   b" "))
                  for _ in range(SLOW)]
        heads = [asyncio.create_task(_slow_client(
            svc.port, f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{svc.port}\r\nX-A: "
            .encode(), b"a")) for _ in range(SLOW_HEADS)]
        # Once every tenant slot is taken and the rest of that tenant is turned away...
        answered = [t for t in bodies if t.done()]
        while len(answered) < SLOW - PER_TENANT:
            await asyncio.sleep(0.05)
            answered = [t for t in bodies if t.done()]
        # ...the tricklers are still open, and another tenant's submission goes through.
        holders = [t for t in bodies if not t.done()]
        assert len(holders) == PER_TENANT
        r = await _submit(http, other_key)
        assert r.status_code == 202, r.text
        assert sum(not t.done() for t in bodies) == PER_TENANT, "still open meanwhile"
        r = await _submit(http, slow_key)
        assert r.status_code == 429 and "tenant" in r.json()["detail"], r.text

        statuses = await asyncio.gather(*bodies)
        head_statuses = await asyncio.gather(*heads)
        # The server closed every one of them (gather returned: each read reached EOF). The
        # slot holders got 408; "reset" when the client's next trickle byte crossed the
        # server's answer and close on the wire (the answer is then lost to the RST; the log
        # below shows the server cut each of them for its rate). The others got 429 at once.
        cut = [t.result() for t in holders]
        turned_away = [t.result() for t in bodies if t not in holders]
        assert all(s in ("HTTP/1.1 408 Request Timeout", "reset") for s in cut), statuses
        assert "HTTP/1.1 408 Request Timeout" in cut, statuses
        assert all(s in ("HTTP/1.1 429 Too Many Requests", "reset") for s in turned_away), statuses
        assert head_statuses == ["HTTP/1.1 408 Request Timeout"] * SLOW_HEADS

        # The slots are free again.
        r = await _submit(http, slow_key)
        assert r.status_code == 202, r.text

        # A request head over SECMSG_INGEST_MAX_HEADER_BYTES (16 KiB) is refused, also when it
        # arrives in one piece.
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"GET /v1/messages HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
                     + b"\r\n\r\n")
        await writer.drain()
        try:
            assert (await reader.read()).startswith(b"HTTP/1.1 431 ")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    logged = [json.loads(line) for line in svc.tail(2000).splitlines() if line.startswith("{")]
    phases = [r.get("reason") for r in logged if r.get("event") == "slow_client"]
    assert phases.count("body_rate") == PER_TENANT and phases.count("head") == SLOW_HEADS
