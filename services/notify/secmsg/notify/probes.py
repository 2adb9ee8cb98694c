"""The probe endpoints of notify's processes (the worker and the deliverability process): a
bare ASGI app -- /healthz (alive), /readyz (the dependencies ``readiness`` reports on),
/metrics (Prometheus) -- so a worker needs no web framework."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Readiness = Callable[[], Awaitable[dict[str, str]]]


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
