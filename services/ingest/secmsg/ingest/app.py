"""Wiring of the ingest service: clients built at start-up and closed at shutdown, the probe
app for the internal port (``app.state.probes``: health, readiness, metrics), and one error
handler that turns every refusal into ``{"error", "detail"}`` JSON."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secmsg.ingest import metrics
from secmsg.ingest.adapters.mongo import (
    MongoIdempotencyStore,
    MongoSmtpConfigStore,
    MongoTemplateStore,
    MongoTenantDirectory,
    ensure_indexes,
)
from secmsg.ingest.adapters.mongo_admin import MongoAccessRepo, MongoMessageRepo
from secmsg.ingest.adapters.mongo_reports import MongoReports
from secmsg.ingest.adapters.nats import NatsEventSink
from secmsg.ingest.adapters.smtp import SmtpProbe
from secmsg.ingest.routes import ROUTERS
from secmsg.ingest.settings import IngestSettings
from secmsg.ingest.slots import UploadSlots
from secmsg.ingest.smtp_check import PlatformSmtp, RateLimiter
from secmsg.ingest.upload import Options
from secmsg.ingest.wiring import Deps
from secmsg.shared import bus, mongo, telemetry
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.dkim import MailIdentity
from secmsg.shared.errors import DependencyUnavailable, SecmsgError
from secmsg.shared.http_errors import (
    BODY_PARSE_ERROR,
    error_body,
    use_error_schema,
    validation_detail,
)
from secmsg.shared.httpserver import probe_app
from secmsg.shared.settings import CommonSettings
from secmsg.shared.tenant_cache import TenantChanges

log = logging.getLogger(__name__)


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


class _Metrics:
    """Pure ASGI middleware (does not buffer the streamed request body)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(scope["method"], route).observe(
                time.perf_counter() - started)


async def _retry_in_background(what: str, fn: Callable[[], Awaitable[None]],
                               every_s: float = 2.0) -> None:
    while True:
        try:
            await fn()
            log.info("%s done", what)
            return
        except Exception as exc:
            log.warning("%s failed (%s); retrying", what, type(exc).__name__)
        await asyncio.sleep(every_s)


def create_app(common: CommonSettings | None = None, cfg: IngestSettings | None = None
               ) -> FastAPI:
    common = common or CommonSettings()
    cfg = cfg or IngestSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = mongo.make_client(common)
        db = client[common.mongo_db]
        blobs = S3BlobStore.from_settings(common, max_uploads=cfg.max_concurrent_uploads)
        changes = TenantChanges()  # cached keys and tenants, dropped on tenant.changed
        events = NatsEventSink(common.nats_url, timeout=cfg.publish_timeout_s,
                               options=bus.connect_options(common),
                               replicas=common.nats_stream_replicas, changes=changes)
        await events.start()
        # A dependency that is down at start-up must not stop the process: /readyz says 503
        # and these finish once it is back.
        setup = [
            asyncio.create_task(_retry_in_background(
                "index creation", lambda: ensure_indexes(
                    db, idempotency_ttl_s=cfg.idempotency_ttl_s))),
            asyncio.create_task(_retry_in_background("bucket check", blobs.ensure_bucket)),
        ]
        await asyncio.wait(setup, timeout=10)
        app.state.deps = Deps(
            tenants=MongoTenantDirectory(db, changes=changes,
                                         ttl_s=common.tenant_cache_ttl_s,
                                         max_entries=common.tenant_cache_max_entries),
            idempotency=MongoIdempotencyStore(db),
            blobs=blobs, events=events, key_ring=common.key_ring,
            options=Options(segment_size=cfg.segment_size, queue_chunks=cfg.upload_queue_chunks,
                            heartbeat_s=cfg.idempotency_heartbeat_s,
                            stale_s=cfg.idempotency_stale_s,
                            inline_max_bytes=cfg.inline_max_bytes,
                            inline_total_max_bytes=cfg.inline_total_max_bytes),
            uploads=UploadSlots(cfg.max_concurrent_uploads,
                                cfg.max_concurrent_uploads_per_tenant),
            templates=MongoTemplateStore(db, changes=changes),
            smtp=MongoSmtpConfigStore(db, changes=changes),
            public_url=common.retrieve_public_url,
            smtp_allowed_targets=common.smtp_allowed_targets,
            messages=MongoMessageRepo(db), access=MongoAccessRepo(db, changes=changes),
            reports=MongoReports(db), prober=SmtpProbe(),
            platform_smtp=PlatformSmtp(
                host=common.smtp_host, port=common.smtp_port, tls=common.smtp_tls,
                username=common.smtp_username, password=common.smtp_password,
                mail_from=common.smtp_from, timeout_s=cfg.smtp_test_timeout_s,
                ca_file=common.smtp_ca_file, allowed_targets=common.smtp_allowed_targets,
                # signed and aligned like notify's notifications (PlatformMailSettings)
                identity=MailIdentity.from_settings(
                    common.smtp_from, service="ingest (the admin's SMTP test)")),
            smtp_test_limiter=RateLimiter(cfg.smtp_test_per_minute))
        # Everything built so far (the app, its routes and models, the clients) lives as long
        # as the process: move it out of the collector's way, so the collections that
        # per-request garbage triggers stop walking it over and over.
        gc.freeze()
        try:
            yield
        finally:
            for task in setup:
                task.cancel()
            await events.close()
            await client.close()

    app = FastAPI(
        title="secmsg ingest",
        version="1.0.0",
        summary="Submit secure messages: content is encrypted at rest and recipients are "
                "notified to read it over HTTPS.",
        lifespan=lifespan,
    )
    use_error_schema(app)  # 422 documented as the {"error", "detail"} it is
    app.add_middleware(_Metrics)
    for router in ROUTERS:
        app.include_router(router)
    telemetry.instrument_fastapi(app, telemetry.setup_tracing("ingest", common))

    @app.exception_handler(SecmsgError)
    async def on_secmsg_error(_: Request, exc: SecmsgError) -> JSONResponse:
        if isinstance(exc, DependencyUnavailable):
            log.warning("dependency unavailable: %s", exc.detail)
            return _error(503, exc.code, exc.detail, {"Retry-After": "5"})
        if exc.status >= 500:
            log.error("request failed: %s", exc.detail)
            return _error(exc.status, exc.code, "internal error")
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_input", validation_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:  # e.g. not UTF-8
            return _error(422, "invalid_input", "body: not valid JSON")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error (%s)", type(exc).__name__, exc_info=exc)
        return _error(500, "internal_error", "internal error")

    async def readiness() -> dict[str, str]:
        deps: Deps | None = getattr(app.state, "deps", None)
        if deps is None:
            return {"startup": "starting"}
        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "nats": deps.events.ping, "mongodb": deps.tenants.ping, "s3": deps.blobs.ping}

        async def run(check: Callable[[], Awaitable[None]]) -> str | None:
            try:
                await asyncio.wait_for(check(), cfg.readiness_timeout_s)
                return None
            except SecmsgError as exc:
                return exc.detail
            except TimeoutError:
                return "timed out"
            except Exception as exc:
                return type(exc).__name__

        results = await asyncio.gather(*(run(c) for c in checks.values()))
        return {name: r for name, r in zip(checks, results, strict=True) if r}

    # /healthz, /readyz and /metrics: served on the internal port only (__main__), never on
    # the public one the Ingress exposes.
    app.state.probes = probe_app(readiness)
    return app


def openapi() -> dict[str, Any]:
    """The OpenAPI document (e.g. for publishing docs without a running server)."""
    return create_app().openapi()
