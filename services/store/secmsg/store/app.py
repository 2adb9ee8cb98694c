"""Wiring: the broker and its subscribers, clients built at start-up, background loops, health.

Start-up order matters: the stream and indexes exist before the subscribers bind their durable
consumers. Shutdown order too: loops stop first, then the broker finishes (or gives back) the
events in flight within ``graceful_timeout_s``, and only then are the clients closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.nats import NatsBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo import AsyncMongoClient

from secmsg.shared import bus, subjects, telemetry, worker
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.mongo import make_client
from secmsg.shared.settings import CommonSettings
from secmsg.store import deadletters, service
from secmsg.store.adapters import mongo as mongo_adapter
from secmsg.store.handlers import Deps, register
from secmsg.store.routes import admin_routes
from secmsg.store.settings import StoreSettings

log = logging.getLogger(__name__)
PING_TIMEOUT_S = 3.0


@dataclass
class Runtime:
    """What start-up builds and shutdown tears down."""

    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    broker: NatsBroker | None = None
    mongo: AsyncMongoClient[Any] | None = None
    deps: Deps | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def get_deps(self) -> Deps:
        if self.deps is None:
            raise DependencyUnavailable("store is not started")
        return self.deps


_R = TypeVar("_R")


async def _every(interval_s: float, name: str, job: Callable[[], Awaitable[_R]], *,
                 again: Callable[[_R], bool] | None = None) -> None:
    """Run ``job`` every ``interval_s``; right away again while ``again(its result)`` says
    there is more (a backlog is worked off at full speed, a quiet system reads once per
    interval)."""
    me = asyncio.current_task()
    while True:
        more = False
        try:
            result = await job()
            more = again is not None and again(result)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bad round must not end the loop; the next one retries
            log.exception("%s failed; next run in %.0fs", name, interval_s)
        if me is not None and me.cancelling():
            # A cancel that landed inside a driver call which swallowed it (seen with PyMongo
            # while a stop came during the first round): without this the loop slept a whole
            # interval (an hour by default) and the shutdown waited on it.
            raise asyncio.CancelledError
        await asyncio.sleep(0 if more else interval_s)


async def readiness(rt: Runtime) -> dict[str, str]:
    """Problems keyed by dependency; empty when NATS, MongoDB and S3 all answer."""
    d = rt.deps
    if d is None or rt.broker is None:
        return {"startup": "not started"}
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "nats": worker.BrokerPublisher(rt.broker, timeout=PING_TIMEOUT_S).ping,
        "mongodb": lambda: mongo_adapter.ping(d.db),
        "s3": d.blobs.ping,
    }
    problems: dict[str, str] = {}

    async def check(name: str, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            await asyncio.wait_for(fn(), PING_TIMEOUT_S)
        except DependencyUnavailable as exc:
            problems[name] = exc.detail
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}"

    await asyncio.gather(*(check(n, f) for n, f in checks.items()))
    return problems


def create_app(common: CommonSettings | None = None,
               cfg: StoreSettings | None = None) -> AsgiFastStream:
    common = common or CommonSettings()
    cfg = cfg or StoreSettings()
    rt = Runtime()
    # One NATS connection: the broker's. Handlers are typed (handlers.py), events published
    # through it (worker.BrokerPublisher).
    broker = rt.broker = NatsBroker(
        bus.servers(common.nats_url), **bus.broker_options(common), name="secmsg-store",
        max_reconnect_attempts=-1, reconnect_time_wait=1,
        graceful_timeout=cfg.graceful_timeout_s, logger=logging.getLogger("secmsg.store.broker"),
        log_level=logging.DEBUG)  # "Received"/"Processed" per event: debug, not info
    if (tracing := telemetry.nats_middleware(telemetry.setup_tracing("store", common))):
        broker.add_middleware(tracing)
    consumers = register(broker, rt.get_deps, cfg, inbox=bus.subscriber_inbox(common))

    async def start_clients() -> None:
        # The stream and the consumers' limits exist before the subscribers bind.
        nc = await broker.connect()
        await bus.ensure_stream(nc, replicas=common.nats_stream_replicas)
        await consumers.ensure_consumers(nc)
        rt.mongo = make_client(common)
        db = rt.mongo[common.mongo_db]
        await mongo_adapter.ensure_indexes(db)
        blobs = S3BlobStore.from_settings(common)
        await blobs.ensure_bucket()
        rt.deps = Deps(db=db, messages=mongo_adapter.MongoMessageRepo(db),
                       claims=mongo_adapter.MongoPurgeClaims(db),
                       deliveries=mongo_adapter.MongoDeliveryRepo(db),
                       audit=mongo_adapter.MongoAuditRepo(db), blobs=blobs,
                       publisher=worker.BrokerPublisher(broker),
                       undeliverable=mongo_adapter.MongoUndeliverableRepo(db),
                       rotations=mongo_adapter.MongoRotationRepo(db),
                       tenants=mongo_adapter.MongoTenantPolicies(db),
                       keyring=common.key_ring, owner=rt.owner,
                       dead_letters=mongo_adapter.MongoDeadLetterRepo(db))
        log.info("store started (owner %s)", rt.owner)

    async def start_loops() -> None:
        d = rt.get_deps()

        def full_batch(purged: int) -> bool:
            # A purge run that hit its batch limit left more due: the next one follows at
            # once (many messages expiring in the same minutes, a long pause, a new policy).
            return purged >= cfg.expiry_batch

        rt.tasks.append(asyncio.create_task(_every(
            cfg.expiry_interval_s, "expiry purge",
            lambda: service.purge_expired(messages=d.messages, claims=d.claims, blobs=d.blobs,
                                          owner=rt.owner, lease_s=cfg.purge_lease_s,
                                          limit=cfg.expiry_batch, grace_s=cfg.expiry_grace_s,
                                          max_minutes=cfg.expiry_catchup_minutes),
            again=full_batch)))
        # Its read of a tenant's messages by ``received_at`` is a scan on FerretDB/SQLite
        # (docs/cost.md), so it runs on its own, longer interval.
        rt.tasks.append(asyncio.create_task(_every(
            cfg.retention_interval_s, "retention purge",
            lambda: service.purge_retained(messages=d.messages, tenants=d.tenants,
                                           claims=d.claims, blobs=d.blobs, owner=rt.owner,
                                           lease_s=cfg.purge_lease_s, limit=cfg.expiry_batch),
            again=full_batch)))
        rt.tasks.append(asyncio.create_task(_every(
            cfg.orphan_sweep_interval_s, "orphan sweep",
            lambda: service.sweep_orphans(messages=d.messages, blobs=d.blobs,
                                          grace_s=cfg.orphan_grace_s))))
        rt.tasks.append(asyncio.create_task(_every(
            cfg.dead_letters_poll_s, "dead-letter gauge",
            lambda: deadletters.refresh_gauge(mongo_adapter.MongoDeadLetterRepo(d.db)))))
        rt.tasks.append(asyncio.create_task(telemetry.watch_consumer_lag(
            broker.connection.jetstream(), [subjects.STORE_RECEIVED, subjects.STORE_DELIVERY,
                                            subjects.STORE_AUDIT, subjects.STORE_CONTROL])))

    async def stop_loops() -> None:
        for task in rt.tasks:
            task.cancel()
        if rt.tasks:
            _, stuck = await asyncio.wait(rt.tasks, timeout=cfg.graceful_timeout_s)
            for task in stuck:  # never wait without bound on a stop
                log.warning("background task %s did not stop within %.0fs; left behind",
                            task.get_coro(), cfg.graceful_timeout_s)
        rt.tasks.clear()

    async def close_clients() -> None:
        if rt.mongo is not None:
            await rt.mongo.close()
            rt.mongo = None
        rt.deps = None
        log.info("store stopped")

    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', 200, {"Content-Type": "application/json"})

    @get
    async def readyz(scope: Any) -> AsgiResponse:
        import json

        problems = await readiness(rt)
        body = {"status": "ready"} if not problems else {"status": "unavailable",
                                                          "reasons": problems}
        return AsgiResponse(json.dumps(body).encode(), 503 if problems else 200,
                            {"Content-Type": "application/json"})

    @get
    async def metrics(scope: Any) -> AsgiResponse:
        return AsgiResponse(generate_latest(), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    app = AsgiFastStream(
        broker,
        asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics),
                     *admin_routes(cfg.admin_token,
                                   lambda: mongo_adapter.MongoDeadLetterRepo(rt.get_deps().db),
                                   lambda: deadletters.broker_publisher(broker))],
        on_startup=[start_clients],
        after_startup=[start_loops],
        on_shutdown=[stop_loops],
        after_shutdown=[close_clients],
        logger=logging.getLogger("secmsg.store.app"),
    )
    app.state = rt  # type: ignore[attr-defined]  # tests reach the runtime through here
    return app
