"""Operator-facing extras of notify: tracing on its broker and the consumer-lag gauges.

Kept apart from app.py so the wiring is two calls: ``attach(worker)`` before
``worker.start()`` (a broker takes middlewares only before it starts), and
``await obs.start()`` / ``await obs.stop()`` around the worker's life.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from secmsg.shared import subjects, telemetry

if TYPE_CHECKING:
    from secmsg.notify.app import NotifyWorker


class Observability:
    def __init__(self, worker: NotifyWorker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """After ``worker.start()``: keep ``secmsg_consumer_*`` current for notify's durable."""
        if self.worker.nc is not None and self.task is None:
            self.task = asyncio.create_task(telemetry.watch_consumer_lag(
                self.worker.nc.jetstream(), [subjects.NOTIFY_STORED]))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


def attach(worker: NotifyWorker) -> Observability:
    """Before ``worker.start()``: FastStream's tracing middleware when SECMSG_OTEL_ENABLED."""
    middleware = telemetry.nats_middleware(telemetry.setup_tracing("notify", worker.common))
    if middleware is not None:
        worker.broker.add_middleware(middleware)
    return Observability(worker)
