"""The probe endpoints of notify's processes (the worker and the deliverability process): a
bare ASGI app -- /healthz (alive), /readyz (the dependencies ``readiness`` reports on),
/metrics (Prometheus) -- so a worker needs no web framework; the readiness check both use;
and ``serve``, which runs a process and its probes until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared.errors import DependencyUnavailable

Readiness = Callable[[], Awaitable[dict[str, str]]]


async def nats_and_mongo_problems(nats_pings: Sequence[Callable[[], Awaitable[None]]] | None,
                                  db: AsyncDatabase[Any]) -> dict[str, str]:
    """Problems by dependency: ``nats`` unless every ping passes (None: not connected yet),
    ``mongodb`` unless the database answers; empty when both are fine."""
    problems: dict[str, str] = {}
    try:
        if nats_pings is None:
            raise DependencyUnavailable("not connected yet")
        for ping in nats_pings:
            await ping()
    except DependencyUnavailable as exc:
        problems["nats"] = exc.detail
    try:
        await db.command("ping")
    except Exception as exc:
        problems["mongodb"] = f"unreachable ({type(exc).__name__})"
    return problems


class _Server(uvicorn.Server):
    # uvicorn re-raises a captured SIGTERM once it has shut down, which would kill the
    # process before it drains; the signals are handled in serve() instead.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(app: Any, *, host: str, port: int, start: Callable[[], Awaitable[None]],
                stop: Callable[[], Awaitable[None]]) -> None:
    """``start()``, serve ``app`` until SIGTERM (or SIGINT), then ``stop()`` (also when
    serving fails)."""
    server = _Server(uvicorn.Config(app, host=host, port=port, lifespan="off",
                                    access_log=False, log_config=None, log_level="warning"))

    def request_exit() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_exit)
    await start()
    try:
        await server.serve()
    finally:
        await stop()


def probe_app(readiness: Readiness) -> Any:
    """``readiness()`` returns the problems by dependency; empty means ready."""

    async def respond(send: Any, status: int, body: bytes, content_type: str) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def as_json(data: object) -> bytes:
        return json.dumps(data).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            await respond(send, 405, as_json({"error": "method_not_allowed",
                                              "detail": "Only GET is supported."}),
                          "application/json")
        elif path == "/healthz":
            await respond(send, 200, as_json({"status": "ok"}), "application/json")
        elif path == "/readyz":
            problems = await readiness()
            if problems:
                await respond(send, 503, as_json({"status": "unavailable",
                                                  "reasons": problems}), "application/json")
            else:
                await respond(send, 200, as_json({"status": "ready"}), "application/json")
        elif path == "/metrics":
            await respond(send, 200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            await respond(send, 404, as_json({"error": "not_found", "detail": "No such path."}),
                          "application/json")

    return app
