"""shared/httpserver.py against a real uvicorn server on loopback, from raw sockets: the request
head deadline (also on a kept-alive connection), the body idle timeout, that time the
application spends with what it already has is not held against the client, that an early
answer closes a half-read connection, and that forwarded headers count only from trusted
peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devstack.servers import free_port
from secmsg.shared import httpserver
from secmsg.shared.httpserver import EdgeSettings

EDGE = EdgeSettings(header_timeout_s=0.5, body_idle_timeout_s=0.5, body_min_rate=0)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST /slow: reads a chunk, then works 1.5 s before reading on. POST /early: answers
    401 without reading. Anything else: reads the whole body. Answers with what it saw."""
    if scope["type"] != "http":
        return
    body = b""
    if scope["path"] != "/early":
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if scope["path"] == "/slow":
                await asyncio.sleep(1.5)
            if not message.get("more_body"):
                break
    out = json.dumps({"client": scope["client"][0], "body": len(body)}).encode()
    await send({"type": "http.response.start", "status": 401 if scope["path"] == "/early"
                else 200, "headers": [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(edge: EdgeSettings = EDGE) -> int:
        port = free_port()
        server = httpserver._Server(httpserver.public_config(
            app, edge, host="127.0.0.1", port=port, lifespan="off"))
        task = asyncio.create_task(server.serve())
        await server.listening.wait()
        servers.append((server, task))
        return port

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def exchange(port: int, *chunks: bytes, pause: float = 0.0) -> bytes:
    """Send the chunks (``pause`` s apart), stopping once the server answers (writing on
    would reset the connection and lose the answer); everything it sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    answer = await reader.read(65536)
            if answer:
                break
        async with asyncio.timeout(20):
            return answer + await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_stalled_body_gets_408_and_the_connection_closes(serve: Any) -> None:
    port = await serve()
    answer = await exchange(port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"request_timeout"' in answer


async def test_time_the_app_spends_is_not_held_against_the_client(serve: Any) -> None:
    port = await serve()
    # Two chunks, the app pausing 1.5 s after each (3 x the idle timeout): not the client's.
    answer = await exchange(port, b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                                  b"Connection: close\r\n\r\nab", b"cd", pause=0.1)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'"body": 4}')


async def test_a_trickling_body_is_cut_by_the_minimum_rate(serve: Any) -> None:
    port = await serve(EdgeSettings(header_timeout_s=5, body_idle_timeout_s=0.6,
                                    body_min_rate=100))
    # A byte every 0.2 s never stays idle for 0.6 s, but is far below 100 bytes/s.
    answer = await exchange(port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
                            *[b"a"] * 30, pause=0.2)
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_the_next_head_on_a_kept_alive_connection_has_a_deadline(serve: Any) -> None:
    port = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"GET /y HTTP/1.1\r\n")  # ...and the rest never comes
        async with asyncio.timeout(20):
            assert (await reader.read()).startswith(b"HTTP/1.1 408 ")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_an_answer_before_the_body_closes_the_connection(serve: Any) -> None:
    port = await serve()
    answer = await exchange(port, b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n"
                                  b"\r\nabc")
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize(("trusted", "client"), [("", "127.0.0.1"),
                                                 ("127.0.0.1/32", "203.0.113.9")])
async def test_forwarded_for_counts_only_from_trusted_peers(serve: Any, trusted: str,
                                                           client: str) -> None:
    port = await serve(EdgeSettings(forwarded_allow_ips=trusted))
    answer = await exchange(port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                  b"X-Forwarded-For: 203.0.113.9\r\n\r\n")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["client"] == client
