"""The probes of notify's processes (the worker and the deliverability process): the shared
probe app (``probe_app``: /healthz, /readyz, /metrics on the internal port, so a worker needs
no web framework), the readiness check both use, and ``serve``, which runs a process and its
probes until SIGTERM."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import httpserver
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.httpserver import Readiness, probe_app

__all__ = ["Readiness", "nats_and_mongo_problems", "probe_app", "serve"]


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


async def serve(app: Any, *, host: str, port: int, start: Callable[[], Awaitable[None]],
                stop: Callable[[], Awaitable[None]]) -> None:
    """``start()``, serve ``app`` on the internal port until SIGTERM (or SIGINT), then
    ``stop()`` (also when serving fails)."""
    await start()
    try:
        await httpserver.serve(httpserver.internal_config(app, host=host, port=port))
    finally:
        await stop()
