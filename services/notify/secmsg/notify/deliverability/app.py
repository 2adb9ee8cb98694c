"""Wiring of the deliverability process: NATS (publisher), MongoDB (status document, message
lookups), the bounce receiver's SMTP server, the DNSBL monitor task, and the small HTTP app
for /healthz, /readyz (NATS + MongoDB), /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client as NATS
from pymongo import AsyncMongoClient

from secmsg.notify.deliverability import dnsbl
from secmsg.notify.deliverability.adapters.mongo import MongoMessageDirectory, MongoStatusRepo
from secmsg.notify.deliverability.adapters.resolver import DnsBlocklistResolver
from secmsg.notify.deliverability.adapters.smtp import BounceHandler, BounceServer
from secmsg.notify.deliverability.settings import DeliverabilitySettings
from secmsg.notify.probes import nats_and_mongo_problems, probe_app
from secmsg.shared import bus
from secmsg.shared.mongo import make_client
from secmsg.shared.settings import CommonSettings

log = logging.getLogger(__name__)


class Deliverability:
    """The running process; ``start()``/``stop()`` bracket its life."""

    def __init__(self, common: CommonSettings | None = None,
                 settings: DeliverabilitySettings | None = None) -> None:
        self.common = common or CommonSettings()
        self.settings = settings or DeliverabilitySettings()
        s = self.settings
        if s.dnsbl_auto_standby and not s.standby_smtp_host:
            log.warning("SECMSG_NOTIFY_DNSBL_AUTO_STANDBY is on but "
                        "SECMSG_NOTIFY_STANDBY_SMTP_HOST is unset: listings are only alerted",
                        extra={"event": "config"})
        self.mongo: AsyncMongoClient[Any] = make_client(self.common)
        self.db = self.mongo[self.common.mongo_db]
        self.checks = dnsbl.targets(ips=s.ip_targets, ip_zones=s.ip_zones,
                                    domains=s.domain_targets, domain_zones=s.domain_zones)
        self.nc: NATS | None = None
        self.publisher: bus.EventPublisher | None = None
        self.bounces: BounceServer | None = None
        self._stop = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.nc = await bus.connect(self.common.nats_url, "secmsg-notify-deliverability",
                                    **bus.connect_options(self.common))
        await bus.ensure_stream(self.nc, replicas=self.common.nats_stream_replicas)
        self.publisher = bus.EventPublisher(self.nc)
        if s.bounce_address:
            handler = BounceHandler(bounce_address=s.bounce_address, publisher=self.publisher,
                                    tenant_bounce_subdomain=s.tenant_bounce_subdomain,
                                    messages=MongoMessageDirectory(self.db))
            self.bounces = BounceServer(handler, host=s.bounce_host, port=s.bounce_port,
                                        max_bytes=s.bounce_max_bytes)
            await self.bounces.start()
        else:
            log.info("bounce receiver off: SECMSG_NOTIFY_BOUNCE_ADDRESS is unset",
                     extra={"event": "bounce_receiver_off"})
        self._monitor = asyncio.create_task(dnsbl.run_monitor(
            checks=self.checks,
            resolver=DnsBlocklistResolver(nameserver=s.dnsbl_nameserver,
                                          timeout_s=s.dnsbl_timeout_s),
            repo=MongoStatusRepo(self.db),
            policy=dnsbl.MonitorPolicy(clear_checks=s.dnsbl_clear_checks,
                                       standby_possible=s.standby_possible),
            interval_s=s.dnsbl_interval_s, stop=self._stop))
        log.info("notify-deliverability started", extra={"event": "startup"})

    async def stop(self) -> None:
        self._stop.set()
        try:
            if self.bounces is not None:
                await self.bounces.stop(self.settings.deliverability_graceful_s)
            if self._monitor is not None:
                # A check in progress is waiting on DNS or MongoDB: not worth waiting for.
                self._monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._monitor
        finally:
            if self.nc is not None:
                await self.nc.close()
            await self.mongo.close()
        log.info("notify-deliverability stopped", extra={"event": "shutdown"})

    async def readiness(self) -> dict[str, str]:
        pings = None if self.publisher is None else (self.publisher.ping,)
        return await nats_and_mongo_problems(pings, self.db)

def make_http_app(rt: Deliverability) -> Any:
    """A bare ASGI app: /healthz (alive), /readyz (NATS + MongoDB), /metrics (Prometheus)."""
    return probe_app(rt.readiness)
