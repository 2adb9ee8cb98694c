"""How every secmsg process serves HTTP.

Two ports per process:

* the **public** port (ingest and retrieve only) -- the API and pages the Ingress exposes;
  never ``/healthz``, ``/readyz`` or ``/metrics``;
* the **internal** port (every process, ``SECMSG_<SVC>_INTERNAL_PORT``) -- only the probe app
  below: ``/healthz`` (alive), ``/readyz`` (dependencies reachable), ``/metrics``
  (Prometheus). It listens on loopback unless ``SECMSG_<SVC>_INTERNAL_HOST`` says otherwise
  (Kubernetes: the pod address, reached by the kubelet and Prometheus only -- NetworkPolicy).

Slow and abusive clients (uvicorn has a keep-alive timeout but no deadline for the request
head and none for the body):

* ``head_deadline_protocol`` -- uvicorn's httptools protocol (the C parser llhttp: a small
  fraction of the CPU the pure-Python h11 took per request) with a deadline for the whole
  request head, counted from the connection (or, on a kept-alive connection, from the next
  request's first byte); past it the connection gets ``408`` and is closed. A head larger
  than ``max_header_bytes`` gets ``431`` and is closed (the parser has no limit of its own).
* ``BodyTimeouts`` -- ASGI middleware: while the application waits for the body, a client
  that sends nothing for ``idle_s`` or falls below ``min_rate`` bytes/s on average (after a
  grace of ``idle_s``, as Apache's mod_reqtimeout ``MinRate``) gets ``408`` and the connection
  is closed. Only time spent waiting on the client counts, not time the application spends
  with what it already has. A response sent before the body was read (``401``, ``413``,
  ``429``...) closes the connection instead of keeping a half-read one.

Forwarded headers (``X-Forwarded-For``/``-Proto``) are applied only for peers in
``forwarded_allow_ips`` (empty: none; the client is then the TCP peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Literal, TypeVar

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from pydantic_settings import BaseSettings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Readiness = Callable[[], Awaitable[dict[str, str]]]
ASGIApp = Callable[..., Awaitable[None]]


class EdgeSettings(BaseSettings):
    """The public port's address and protection against slow clients and spoofed headers.

    A base for the settings of the services with a public port (each reads them with its own
    prefix, e.g. ``SECMSG_INGEST_HEADER_TIMEOUT_S``); each declares its public ``port``."""

    host: str = Field(default="0.0.0.0", description="listen address of the public port")
    header_timeout_s: float = Field(
        default=10.0, gt=0,
        description="Whole request head (request line and headers) within this time, from "
                    "the connection or the next request's first byte; else 408 and closed")
    body_idle_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Longest wait for the next bytes of a request body; else 408 and closed")
    body_min_rate: int = Field(
        default=1024, ge=0,
        description="Average request-body bytes per second a client must keep up after the "
                    "first BODY_IDLE_TIMEOUT_S of waiting; else 408 and closed (0: off)")
    keep_alive_s: int = Field(
        default=5, ge=1, description="Idle keep-alive connections are closed after this")
    max_header_bytes: int = Field(
        default=16384, ge=1024,
        description="Largest request head (request line and headers); larger gets 431")
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies (comma list of addresses or CIDRs) whose X-Forwarded-For/-Proto "
                    "are applied; empty: none, the client is the TCP peer. Kubernetes: the "
                    "ingress controller's pod range")


# --- the probe app ------------------------------------------------------------------------

def probe_app(readiness: Readiness) -> ASGIApp:
    """A bare ASGI app: /healthz, /readyz (``readiness()`` returns problems by dependency;
    empty means ready), /metrics; 404 for anything else, 405 for methods but GET/HEAD."""

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


# --- slow clients -------------------------------------------------------------------------

def _raw_response(status: bytes, error: str, detail: str) -> bytes:
    body = json.dumps({"error": error, "detail": detail}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


_TIMEOUT_408 = _raw_response(b"408 Request Timeout", "request_timeout",
                             "the request head came too slowly")
_TOO_LARGE_431 = _raw_response(b"431 Request Header Fields Too Large", "header_too_large",
                               "the request head is too large")


class _HeadDeadline(HttpToolsProtocol):
    head_timeout_s: float = 10.0
    max_head_bytes: int = 16384
    _head_timer: asyncio.TimerHandle | None = None
    _head_size = 0  # bytes of the current request head seen so far
    _head_tail = b""  # its last 3 bytes, to find a CRLFCRLF split across reads
    _in_head = True  # waiting for (the rest of) a request head: the first, or the next one

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # The parser has no size limit of its own: count the head's bytes here, whatever
            # the reads look like.
            joined = self._head_tail + data
            end = joined.find(b"\r\n\r\n")
            if end >= 0:
                size = self._head_size + end + 4 - len(self._head_tail)
                self._head_size, self._head_tail = 0, b""
            else:
                size = self._head_size = self._head_size + len(data)
                self._head_tail = joined[-3:]
                # The first bytes of a kept-alive connection's next request start its
                # deadline (a head that arrives whole in one read needs no timer).
                if self._head_timer is None:
                    self._arm_head()
            if size > self.max_head_bytes:
                self._disarm_head()
                self.transport.write(_TOO_LARGE_431)
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_size, self._head_tail = 0, b""
        self._disarm_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)

    def _arm_head(self) -> None:
        self._disarm_head()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_expired)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        log.info("request head not complete within %.0f s: connection closed",
                 self.head_timeout_s, extra={"event": "slow_client", "reason": "head"})
        self.transport.write(_TIMEOUT_408)
        self.transport.close()


_PROTOCOLS: dict[tuple[float, int], type[HttpToolsProtocol]] = {}


def head_deadline_protocol(head_timeout_s: float, max_head_bytes: int = 16384
                           ) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (llhttp, C) with a deadline and a size cap for the request
    head (``uvicorn.Config(http=)``)."""
    key = (head_timeout_s, max_head_bytes)
    if key not in _PROTOCOLS:
        _PROTOCOLS[key] = type("HeadDeadlineHttpToolsProtocol", (_HeadDeadline,),
                               {"head_timeout_s": head_timeout_s,
                                "max_head_bytes": max_head_bytes})
    return _PROTOCOLS[key]


def _expects_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


class BodyTimeouts:
    """408 and a closed connection for a request body that stalls or trickles (see module)."""

    def __init__(self, app: ASGIApp, *, idle_s: float, min_rate: float) -> None:
        self.app = app
        self.idle_s = idle_s
        self.min_rate = min_rate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        body_done = not _expects_body(scope.get("headers", []))
        received = 0
        waited = 0.0
        cut: str | None = None
        started = replaced = False

        async def guarded_receive() -> dict[str, Any]:
            nonlocal body_done, received, waited, cut
            if cut:
                return {"type": "http.disconnect"}
            if body_done:
                return dict(await receive())
            allowance = (self.idle_s + received / self.min_rate - waited if self.min_rate
                         else math.inf)
            budget = min(self.idle_s, allowance)
            t0 = loop.time()
            try:
                if budget <= 0:
                    raise TimeoutError
                async with asyncio.timeout(budget):
                    message = dict(await receive())
            except TimeoutError:
                cut = "idle" if budget >= self.idle_s else "rate"
                log.info("request body too slow (%s): 408 and connection closed", cut,
                         extra={"event": "slow_client", "reason": f"body_{cut}"})
                return {"type": "http.disconnect"}
            finally:
                waited += loop.time() - t0
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def send_408() -> None:
            body = json.dumps({"error": "request_timeout",
                               "detail": "the request body came too slowly"}).encode()
            await send({"type": "http.response.start", "status": 408,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the application's answer to a request we already cut
            if message["type"] == "http.response.start":
                started = True
                if cut:
                    replaced = True
                    await send_408()
                    return
                if not body_done:
                    # Answered before the body was read: close rather than keep a connection
                    # whose unread body could trickle on.
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await send_408()


# --- running the servers ------------------------------------------------------------------

class _Server(uvicorn.Server):
    # Signals are handled in serve() for both servers; uvicorn's own handling re-raises the
    # captured signal after shutdown, which would kill the process before the other drains.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


def internal_config(app: ASGIApp, *, host: str, port: int,
                    lifespan: Literal["auto", "on", "off"] = "off",
                    **kwargs: Any) -> uvicorn.Config:
    """The internal (probe) server's config: a 10 s head deadline, no access log."""
    return uvicorn.Config(app, host=host, port=port, lifespan=lifespan, access_log=False,
                          log_config=None, server_header=False, proxy_headers=False,
                          http=head_deadline_protocol(10.0), **kwargs)


def public_config(app: ASGIApp, edge: EdgeSettings, *, host: str, port: int,
                  **kwargs: Any) -> uvicorn.Config:
    """The public server's config: slow-client limits and forwarded headers per ``edge``."""
    trusted = [ip.strip() for ip in edge.forwarded_allow_ips.split(",") if ip.strip()]
    guarded = BodyTimeouts(app, idle_s=edge.body_idle_timeout_s, min_rate=edge.body_min_rate)
    return uvicorn.Config(
        guarded, host=host, port=port, log_config=None, server_header=False,
        http=head_deadline_protocol(edge.header_timeout_s, edge.max_header_bytes),
        timeout_keep_alive=edge.keep_alive_s,
        proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None, **kwargs)


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run a process's main coroutine on uvloop (libuv's event loop, with its own TLS
    transport): the same asyncio API, less CPU per request and per byte than the standard
    loop. Every secmsg process starts this way (``python -m secmsg.<service>``)."""
    return uvloop.run(main)


async def serve(internal: uvicorn.Config, public: uvicorn.Config | None = None) -> bool:
    """Run the public server (if any) and the internal one until SIGTERM/SIGINT.

    The internal port opens once the public server has started (its lifespan ran and it
    listens), so a passing /healthz means the process serves. On a signal the public server
    drains first while the probes keep answering; a second signal stops at once. Returns
    False if a server failed to start."""
    first = _Server(public) if public is not None else _Server(internal)
    probes = _Server(internal) if public is not None else None

    def request_exit() -> None:
        if first.should_exit:
            first.force_exit = True
        first.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_exit)
    try:
        main = asyncio.create_task(first.serve())
        if probes is not None:
            listening = asyncio.create_task(first.listening.wait())
            await asyncio.wait([main, listening], return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
        side = (asyncio.create_task(probes.serve())
                if probes is not None and first.started else None)
        try:
            await main
        finally:
            if side is not None and probes is not None:
                probes.should_exit = True
                await side
        return first.started
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
