"""Wiring of retrieve: clients built at start-up and closed at shutdown, error mapping,
security headers, and the probe app for the internal port (``app.state.probes``: health,
readiness, metrics)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secmsg.retrieve import service, web
from secmsg.retrieve.access import GuardedMessageRepo
from secmsg.retrieve.adapters.accounts import (
    MongoAccountRepo,
    MongoDeviceRepo,
    MongoMarkerRepo,
    MongoPolicyRepo,
    MongoRevocationRepo,
    MongoTokenRepo,
)
from secmsg.retrieve.adapters.blobs import S3BlobReader
from secmsg.retrieve.adapters.bus import NatsAuditPublisher
from secmsg.retrieve.adapters.mongo import (
    MongoCodeRepo,
    MongoJanitor,
    MongoMessageRepo,
    MongoRateLimiter,
    MongoSessionRepo,
    MongoTenantRepo,
    ensure_indexes,
)
from secmsg.retrieve.adapters.passkeys import MongoPasskeyRepo
from secmsg.retrieve.adapters.passkeys import ensure_indexes as passkey_indexes
from secmsg.retrieve.adapters.smtp import SmtpCodeMailer
from secmsg.retrieve.deps import Deps
from secmsg.retrieve.downloads import RangeUnsatisfiable
from secmsg.retrieve.metrics import BYTES_OUT, LATENCY, REQUESTS
from secmsg.retrieve.routes import ROUTERS
from secmsg.retrieve.service import RateLimited
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.shared import bus, mongo, telemetry
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.dkim import MailIdentity
from secmsg.shared.errors import (
    DependencyUnavailable,
    IntegrityError,
    SecmsgError,
    TransientError,
    Unauthorized,
)
from secmsg.shared.http_errors import (
    BODY_PARSE_ERROR,
    error_body,
    use_error_schema,
    validation_detail,
)
from secmsg.shared.httpserver import probe_app
from secmsg.shared.settings import CommonSettings

log = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# Pages carry no script and no style: nothing may load, forms only post back here.
STRICT_CSP = (b"default-src 'none'; form-action 'self'; frame-ancestors 'none'; "
              b"base-uri 'none'")


# The interactive API page (/docs, as ingest has): FastAPI's Swagger UI page, whose one inline
# script is allowed by its hash, not by 'unsafe-inline'; the UI's files come from the CDN
# FastAPI uses, and it may only fetch this origin (the OpenAPI document, "Try it out").
_SWAGGER_CDN = "https://cdn.jsdelivr.net"


def docs_page() -> Response:
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="secmsg retrieve - API")
    html = bytes(page.body).decode()
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest())
                      .decode() + "'" for s in inline)
    csp = (f"default-src 'none'; script-src {_SWAGGER_CDN} {hashes}; "
           f"style-src {_SWAGGER_CDN}; img-src 'self' data: https://fastapi.tiangolo.com; "
           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return HTMLResponse(html, headers={"content-security-policy": csp})


class EdgeMiddleware:
    """Security headers on every response, plus request, latency and bytes-out metrics."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def wrapped(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"server"]
                present = {k.lower() for k, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", STRICT_CSP))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "GET")
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
            BYTES_OUT.labels(route).inc(sent)


def _error(status: int, code: str, detail: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


async def on_secmsg_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SecmsgError)
    headers: dict[str, str] = {}
    detail = exc.detail
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, RangeUnsatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, IntegrityError):
        log.error("integrity check failed: %s", exc.detail)
        detail = "stored content failed its integrity check"
    elif isinstance(exc, TransientError):
        log.warning("dependency unavailable: %s", exc.detail)
        headers["Retry-After"] = "5"
    return _error(exc.status, exc.code, detail, headers)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error(422, "invalid_input", validation_detail(exc.errors()))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:  # e.g. not UTF-8
        return _error(422, "invalid_input", "body: not valid JSON")
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                  dict(exc.headers or {}))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return _error(500, "internal_error", "an unexpected error occurred")


async def build_deps(common: CommonSettings, settings: RetrieveSettings,
                     stack: list[Callable[[], Awaitable[Any]]]) -> Deps:
    """Connect everything retrieve talks to; ``stack`` collects the closers."""
    client = mongo.make_client(common)
    stack.append(client.close)
    db = client[common.mongo_db]
    nc = await bus.connect(common.nats_url, "secmsg-retrieve", **bus.connect_options(common))
    stack.append(nc.close)
    await bus.ensure_stream(nc, replicas=common.nats_stream_replicas)
    publisher = bus.EventPublisher(nc, timeout=settings.publish_timeout_s)
    blobs = S3BlobStore.from_settings(common)
    try:
        async with mongo.unavailable_as_503():
            await ensure_indexes(db)
            await passkey_indexes(db)
    except DependencyUnavailable as exc:  # readiness reports it; do not crash-loop on it
        log.warning("indexes not ensured at start-up: %s", exc.detail)

    async def ping_mongo() -> None:
        async with mongo.unavailable_as_503():
            await db.command("ping")

    async def ping_s3() -> None:
        await blobs.ping()

    revocations = MongoRevocationRepo(db)
    policies = MongoPolicyRepo(db)
    return Deps(
        settings=settings, keyring=common.key_ring,
        # Every reader goes through the guard: revoked/recalled is 410 or 404 everywhere.
        messages=GuardedMessageRepo(MongoMessageRepo(db), revocations,
                                    recheck_bytes=settings.download_recheck_bytes,
                                    recheck_s=settings.download_recheck_s),
        tenants=MongoTenantRepo(db), codes=MongoCodeRepo(db), sessions=MongoSessionRepo(db),
        limiter=MongoRateLimiter(db),
        # signed and aligned like notify's notifications (the same PlatformMailSettings)
        mailer=SmtpCodeMailer(common, policies, MailIdentity.from_settings(
                                  common.smtp_from, service="retrieve (sign-in codes)"),
                              common.key_ring),
        audit=NatsAuditPublisher(publisher), blobs=S3BlobReader(blobs), janitor=MongoJanitor(db),
        tokens=MongoTokenRepo(db), accounts=MongoAccountRepo(db),
        markers=MongoMarkerRepo(db), revocations=revocations,
        policies=policies, devices=MongoDeviceRepo(db), passkeys=MongoPasskeyRepo(db),
        public_url=common.retrieve_public_url, database=db,
        readiness={"nats": publisher.ping, "mongodb": ping_mongo, "s3": ping_s3},
    )


def create_app(common: CommonSettings | None = None,
               settings: RetrieveSettings | None = None) -> FastAPI:
    common = common or CommonSettings()
    settings = settings or RetrieveSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        closers: list[Callable[[], Awaitable[Any]]] = []
        try:
            deps = app.state.deps = await build_deps(common, settings, closers)
            # Reads deps.clock at each pass, so a test's shifted clock applies.
            cleanup = asyncio.create_task(service.run_cleanup(
                janitor=deps.janitor, settings=settings, clock=lambda: deps.clock()),
                name="retrieve-cleanup")

            async def stop_cleanup() -> None:
                cleanup.cancel()
                # Bounded: shutdown must not wait on a pass stuck in an unreachable database.
                done, _ = await asyncio.wait([cleanup], timeout=5)
                if not done:
                    log.warning("expiry clean-up did not stop within 5 s")

            closers.append(stop_cleanup)  # closers run in reverse: stopped before the clients
            yield
        finally:
            for close in reversed(closers):
                try:
                    await close()
                except Exception:  # shutting down anyway; keep closing the rest
                    log.warning("error while closing a client", exc_info=True)

    app = FastAPI(
        title="secmsg retrieve",
        version="1.0.0",
        description="Recipient-facing API: sign in with an emailed one-time code, list and "
                    "read secure messages, download attachments (Range, streamed). Errors are "
                    '`{"error": code, "detail": sentence}`.',
        lifespan=lifespan, docs_url=None, redoc_url=None,
    )
    use_error_schema(app)  # 422 documented as the {"error", "detail"} it is
    app.add_middleware(EdgeMiddleware)
    app.add_exception_handler(SecmsgError, on_secmsg_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    for router in ROUTERS:
        app.include_router(router)
    app.add_api_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    # The webmail, which also serves the notification link page /m/{tenant}/{id}.
    web.install(app)
    telemetry.instrument_fastapi(app, telemetry.setup_tracing("retrieve", common))

    async def readiness() -> dict[str, str]:
        deps: Deps | None = getattr(app.state, "deps", None)
        if deps is None:
            return {"startup": "starting"}
        reasons: dict[str, str] = {}
        for name, ping in deps.readiness.items():
            try:
                await ping()
            except SecmsgError as exc:
                reasons[name] = exc.detail
            except Exception as exc:
                reasons[name] = type(exc).__name__
        return reasons

    # /healthz, /readyz and /metrics: served on the internal port only (__main__), never on
    # the public one the Ingress exposes.
    app.state.probes = probe_app(readiness)
    return app
