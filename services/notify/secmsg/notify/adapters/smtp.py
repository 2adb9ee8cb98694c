"""``SmtpMailer``: sends through aiosmtplib, reusing connections from a pool per SMTP target.

A pool is keyed by (host, port, TLS mode, user), so tenant-specific SMTP services (and their
rate limits) can each get their own later. A connection the server closed while idle is
replaced transparently: if ``MAIL FROM`` on a reused connection finds it gone, nothing was
transferred yet, so the same send is tried once on a fresh connection. Once ``DATA`` has begun,
a lost connection is reported as ``SmtpUnavailable`` (the server did not say 250, so the
message is retried later). After an error reply the connection is ``RSET`` and kept; after a
lost connection, a timeout or a cancellation it is closed and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from secmsg.notify.metrics import SMTP_CONNECTIONS
from secmsg.notify.ports import (
    SmtpPermanentFailure,
    SmtpTarget,
    SmtpTemporaryFailure,
    SmtpUnavailable,
)
from secmsg.shared.ssrf import TargetRefused, TargetUnresolvable, resolve_checked

log = logging.getLogger(__name__)


def _classify(exc: SMTPResponseException,
              stage: str) -> SmtpTemporaryFailure | SmtpPermanentFailure:
    detail = f"SMTP {stage} refused: {exc.code} {exc.message}"[:300]
    if 400 <= exc.code < 500:
        return SmtpTemporaryFailure(detail)
    if exc.code >= 500:
        return SmtpPermanentFailure(detail)
    return SmtpTemporaryFailure(f"unexpected SMTP reply at {stage}: {exc.code}")


class _NameContext(ssl.SSLContext):
    """A client TLS context that always verifies (and sends SNI for) one host name, whatever
    address the connection was opened to: aiosmtplib passes its ``hostname`` -- here the
    checked IP -- as ``server_hostname``, and this puts the configured name back."""

    pinned_name: str | None = None

    @classmethod
    def for_host(cls, name: str, cafile: str | None) -> _NameContext:
        ctx = cls(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on, CERT_REQUIRED
        ctx.load_default_certs()
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
        ctx.pinned_name = name
        return ctx

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,  # type: ignore[override]
                 server_side: bool = False, server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side,
                                self.pinned_name or server_hostname, session)


class _TokenBucket:
    """``rate`` sends per second per target, bursts up to one second's worth; 0: unlimited."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._at = time.monotonic()

    async def take(self) -> None:
        if self._rate <= 0:
            return
        while True:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


class _Pool:
    """Up to ``size`` connections to one target; idle ones wait in a LIFO list.

    The slots are per target, so a hanging server holds at most ``size`` of the worker's
    handlers; a tenant's own target whose slots are all busy is reported as unavailable after
    ``saturated_wait_s`` (the event is retried later) instead of parking more handlers on it.
    """

    def __init__(self, target: SmtpTarget, size: int, local_hostname: str, *,
                 rate_per_s: float = 0.0, saturated_wait_s: float = 2.0) -> None:
        self.target = target
        self._slots = asyncio.Semaphore(size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._local_hostname = local_hostname
        self._bucket = _TokenBucket(rate_per_s)
        self._wait_s = min(target.timeout_s, saturated_wait_s) if target.checked \
            else target.timeout_s

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise SmtpUnavailable("all SMTP connections stayed busy") from None
        try:
            await self._bucket.take()
            yield
        finally:
            self._slots.release()

    def take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        return None

    def give_back(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            self._idle.append(client)

    def _checked_client(self, address: str) -> aiosmtplib.SMTP:
        t = self.target
        # Connect to the checked address; TLS (implicit or STARTTLS) verifies the host name.
        # start_tls=True refuses a server that does not offer STARTTLS before anything is sent.
        return aiosmtplib.SMTP(
            hostname=address, port=t.port, use_tls=t.tls == "tls",
            start_tls=t.tls == "starttls", username=t.username, password=t.password,
            timeout=t.timeout_s, local_hostname=self._local_hostname,
            tls_context=_NameContext.for_host(t.host, t.ca_file))

    async def _checked_addresses(self) -> list[str]:
        t = self.target
        if t.username and not t.password:
            raise SmtpPermanentFailure("SMTP auth_failed: the stored password is unusable")
        try:
            addrs = await resolve_checked(t.host, t.port, allow=t.allowed_targets)
        except TargetRefused as exc:
            raise SmtpPermanentFailure("SMTP target refused: not a permitted address") from exc
        except TargetUnresolvable as exc:
            raise SmtpUnavailable("SMTP target unreachable: host does not resolve") from exc
        return [str(a) for a in addrs]

    async def connect(self) -> aiosmtplib.SMTP:
        t = self.target
        if not t.checked:
            client = aiosmtplib.SMTP(
                hostname=t.host, port=t.port, use_tls=t.tls == "tls",
                start_tls=t.tls == "starttls", username=t.username, password=t.password,
                timeout=t.timeout_s, local_hostname=self._local_hostname,
                tls_context=_NameContext.for_host(t.host, t.ca_file) if t.ca_file else None)
            await self._open(client)
            return client
        addresses = await self._checked_addresses()
        for i, address in enumerate(addresses):
            client = self._checked_client(address)
            try:
                await self._open(client)
            except SmtpUnavailable as exc:
                if i + 1 < len(addresses) and isinstance(exc.__cause__,
                                                         aiosmtplib.SMTPConnectError):
                    continue  # refused at TCP level: try the next checked address
                raise
            return client
        raise SmtpUnavailable("SMTP target unreachable")

    async def _open(self, client: aiosmtplib.SMTP) -> None:
        t = self.target
        try:
            await client.connect()
        except SMTPResponseException as exc:
            client.close()
            if exc.code >= 500 and exc.code != 554:
                raise SmtpPermanentFailure(f"SMTP refused the session: {exc.code}") from exc
            raise SmtpUnavailable(f"SMTP refused the session: {exc.code}") from exc
        except (SMTPException, OSError) as exc:
            client.close()
            if "STARTTLS" in str(exc) or isinstance(exc, ssl.SSLError) or \
                    isinstance(exc.__cause__, ssl.SSLError):
                # No plaintext fallback: TLS was required and did not happen.
                raise SmtpUnavailable(f"SMTP tls_failed at {t.label}") from exc
            raise SmtpUnavailable(f"cannot connect to SMTP {t.label} ({type(exc).__name__})") \
                from exc
        except BaseException:
            client.close()  # cancelled mid-handshake: free the connection
            raise
        SMTP_CONNECTIONS.labels(t.label).inc()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.quit(timeout=2)
            client.close()


class SmtpMailer:
    def __init__(self, *, pool_size: int = 4, local_hostname: str | None = None,
                 rate_per_s: float = 0.0, saturated_wait_s: float = 2.0) -> None:
        self._pool_size = pool_size
        self._rate = rate_per_s
        self._saturated_wait_s = saturated_wait_s
        self._pools: dict[tuple[str, int, str, str | None], _Pool] = {}
        self._local_hostname = local_hostname or socket.gethostname() or "localhost"

    def _pool(self, target: SmtpTarget) -> _Pool:
        pool = self._pools.get(target.pool_key)
        if pool is None or pool.target != target:
            # Same account, changed password or timeout: start over with the new settings.
            pool = self._pools[target.pool_key] = _Pool(
                target, self._pool_size, self._local_hostname, rate_per_s=self._rate,
                saturated_wait_s=self._saturated_wait_s)
        return pool

    async def send(self, target: SmtpTarget, *, envelope_from: str, recipient: str,
                   message: bytes) -> None:
        pool = self._pool(target)
        async with pool.slot():
            client = pool.take_idle()
            reused = client is not None
            stage = "MAIL"
            try:
                if client is None:
                    client = await pool.connect()
                try:
                    await client.mail(envelope_from)
                except SMTPServerDisconnected:
                    client.close()
                    if not reused:
                        raise
                    # An idle connection the server had closed: nothing was sent, start afresh.
                    client = await pool.connect()
                    await client.mail(envelope_from)
                stage = "RCPT"
                await client.rcpt(recipient)
                stage = "DATA"
                await client.data(message)
            except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
                if client is not None:
                    client.close()
                raise SmtpUnavailable(
                    f"SMTP connection lost or timed out ({type(exc).__name__})") from exc
            except SMTPResponseException as exc:
                await self._reset_and_keep(pool, client)
                raise _classify(exc, stage) from exc
            except SMTPException as exc:
                if client is not None:
                    client.close()
                raise SmtpUnavailable(f"SMTP error ({type(exc).__name__})") from exc
            except BaseException:
                # Cancelled or a bug mid-conversation: the session state is unknown.
                if client is not None:
                    client.close()
                raise
            pool.give_back(client)

    @staticmethod
    async def _reset_and_keep(pool: _Pool, client: aiosmtplib.SMTP | None) -> None:
        if client is None:
            return
        try:
            await client.rset()
        except Exception:
            client.close()
            return
        pool.give_back(client)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()
