"""The event sink over NATS JetStream, tolerant of NATS being away at start-up.

The connection refuses to buffer publishes while disconnected (``pending_size=0``): a publish
during an outage fails at once (503, the caller cleans up) instead of being flushed later,
after the caller already deleted the objects the event refers to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import BaseModel

from secmsg.shared import bus
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.tenant_cache import TenantChanges

log = logging.getLogger(__name__)


class NatsEventSink:
    def __init__(self, url: str, *, timeout: float, name: str = "secmsg-ingest",
                 options: dict[str, Any] | None = None, replicas: int = 1,
                 changes: TenantChanges | None = None):
        self._changes = changes  # listens for tenant.changed once connected
        self._url = url
        self._options = options or {}  # bus.connect_options: credentials, TLS, inbox
        self._replicas = replicas
        self._timeout = timeout
        self._name = name
        self._nc: NATS | None = None
        self._pub: bus.EventPublisher | None = None
        self._retry: asyncio.Task[None] | None = None

    async def start(self, retry_every_s: float = 2.0) -> None:
        """Connect now if possible, else keep trying in the background (readyz says 503)."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning("NATS not reachable at start-up (%s); retrying", type(exc).__name__)
            self._retry = asyncio.create_task(self._keep_trying(retry_every_s))

    async def _connect(self) -> None:
        nc = await bus.connect(self._url, self._name, pending_size=0, **self._options)
        try:
            await bus.ensure_stream(nc, replicas=self._replicas)
        except Exception:
            await nc.close()
            raise
        if self._changes is not None:
            try:
                await self._changes.listen(nc)
            except Exception:
                await nc.close()
                raise
        self._nc, self._pub = nc, bus.EventPublisher(nc, timeout=self._timeout)

    async def _keep_trying(self, every_s: float) -> None:
        while self._pub is None:
            await asyncio.sleep(every_s)
            try:
                await self._connect()
                log.info("connected to NATS")
            except Exception as exc:
                log.debug("NATS still unreachable: %s", type(exc).__name__)

    async def publish(self, event: BaseModel, msg_id: str) -> bool:
        if self._pub is None or self._nc is None or not self._nc.is_connected:
            raise DependencyUnavailable("event bus unavailable (NATS is not connected)")
        return await self._pub.publish(event, msg_id)

    async def ping(self) -> None:
        if self._pub is None:
            raise DependencyUnavailable("NATS is not connected")
        await self._pub.ping()

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._changes is not None:
            await self._changes.close()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
