"""The bounce receiver's SMTP server (aiosmtpd, on the process's own event loop).

Only the bounce address (with or without a ``+tag``) is accepted as a recipient (550 for any
other: this is not an open relay or a mailbox); more than ``MAX_RECIPIENTS`` in one
transaction get 452. aiosmtpd itself answers 552 past ``data_size_limit``. The 250 after DATA
comes only once every resulting event is acknowledged by JetStream; otherwise 451, and the
sending MTA keeps the report and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from secmsg.notify.alignment import is_bounce_domain
from secmsg.notify.bounce_address import parse_bounce_address
from secmsg.notify.deliverability import metrics
from secmsg.notify.deliverability.bounces import Tag, receive_report
from secmsg.notify.deliverability.ports import EventPublisherPort, MessageDirectory
from secmsg.shared.errors import DependencyUnavailable

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 10
SESSION_TIMEOUT_S = 60.0
REPLY_RETRY = "451 4.3.0 Temporarily unable to record the report, try again later"


class BounceHandler:
    """aiosmtpd handler hooks (``handle_<COMMAND>``)."""

    def __init__(self, *, bounce_address: str, publisher: EventPublisherPort,
                 messages: MessageDirectory, tenant_bounce_subdomain: str | None = None) -> None:
        self.base = bounce_address
        # Tenants with their own DKIM key get bounces at <subdomain>.<their domain> (notify's
        # alignment.py): the same local part, any such domain.
        self._subdomain = tenant_bounce_subdomain
        local, _, domain = bounce_address.rpartition("@")
        self._local, self._domain = local.lower(), domain.lower()
        self._publisher = publisher
        self._messages = messages
        self.in_flight = 0
        self.idle = asyncio.Event()  # set while no report is being recorded
        self.idle.set()

    def _ours(self, address: str) -> bool:
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or not is_bounce_domain(domain, base_domain=self._domain,
                                          subdomain=self._subdomain):
            return False
        base, _, _ = local.partition("+")
        return base.lower() == self._local

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not self._ours(address):
            return "550 5.1.1 No such recipient here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        tags = []
        for rcpt in envelope.rcpt_tos:
            # RCPT let only our local part at our domains in (``_ours``).
            parsed = parse_bounce_address(rcpt) if self._ours(rcpt) else None
            if parsed is not None:
                tags.append(Tag(*parsed))
        self.in_flight += 1
        self.idle.clear()
        try:
            outcomes = await receive_report(raw=raw, tags=tags, publisher=self._publisher,
                                            messages=self._messages)
        except DependencyUnavailable as exc:
            metrics.BOUNCES.labels("retry").inc()
            log.warning("bounce report not recorded, asked the sender to retry (%s)",
                        exc.detail, extra={"event": "bounce_retry"})
            return REPLY_RETRY
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        return f"250 2.0.0 OK ({len(outcomes)} reported)"

    async def handle_exception(self, error: Exception) -> str:
        # Instead of aiosmtpd's default "500 Error: (<type>) <text>": nothing internal is
        # echoed to the client, and 451 keeps the report at the sender for a retry.
        log.error("bounce receiver error (%s)", type(error).__name__,
                  extra={"event": "bounce_error"})
        metrics.BOUNCES.labels("retry").inc()
        return REPLY_RETRY


class BounceServer:
    def __init__(self, handler: BounceHandler, *, host: str, port: int, max_bytes: int) -> None:
        self.handler = handler
        self.host, self.port, self.max_bytes = host, port, max_bytes
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    def _protocol(self) -> SMTP:
        proto = SMTP(self.handler, data_size_limit=self.max_bytes, hostname="secmsg-bounces",
                     ident="secmsg bounce receiver", timeout=SESSION_TIMEOUT_S,
                     loop=asyncio.get_running_loop())
        self._sessions.add(proto)
        original = proto.connection_lost

        def connection_lost(error: Exception | None) -> None:
            self._sessions.discard(proto)
            original(error)

        proto.connection_lost = connection_lost  # type: ignore[method-assign]
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host=self.host, port=self.port)
        log.info("bounce receiver listening on %s:%d", self.host, self.port,
                 extra={"event": "bounce_receiver_started"})

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; let reports being recorded finish (up to ``grace_s``); close the
        remaining sessions (their senders retry)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.handler.idle.wait(), timeout=grace_s)
        for proto in list(self._sessions):
            transport: Any = proto.transport
            if transport is not None:
                transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None
