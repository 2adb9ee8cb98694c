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

log = logging.getLogger(__name__)


def _classify(exc: SMTPResponseException,
              stage: str) -> SmtpTemporaryFailure | SmtpPermanentFailure:
    detail = f"SMTP {stage} refused: {exc.code} {exc.message}"[:300]
    if 400 <= exc.code < 500:
        return SmtpTemporaryFailure(detail)
    if exc.code >= 500:
        return SmtpPermanentFailure(detail)
    return SmtpTemporaryFailure(f"unexpected SMTP reply at {stage}: {exc.code}")


class _Pool:
    """Up to ``size`` connections to one target; idle ones wait in a LIFO list."""

    def __init__(self, target: SmtpTarget, size: int, local_hostname: str) -> None:
        self.target = target
        self._slots = asyncio.Semaphore(size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._local_hostname = local_hostname

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.target.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise SmtpUnavailable("all SMTP connections stayed busy") from None
        try:
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

    async def connect(self) -> aiosmtplib.SMTP:
        t = self.target
        client = aiosmtplib.SMTP(
            hostname=t.host, port=t.port, use_tls=t.tls == "tls",
            start_tls=t.tls == "starttls", username=t.username, password=t.password,
            timeout=t.timeout_s, local_hostname=self._local_hostname)
        try:
            await client.connect()
        except SMTPResponseException as exc:
            client.close()
            if exc.code >= 500 and exc.code != 554:
                raise SmtpPermanentFailure(f"SMTP refused the session: {exc.code}") from exc
            raise SmtpUnavailable(f"SMTP refused the session: {exc.code}") from exc
        except (SMTPException, OSError) as exc:
            client.close()
            raise SmtpUnavailable(f"cannot connect to SMTP {t.label} ({type(exc).__name__})") \
                from exc
        SMTP_CONNECTIONS.labels(t.label).inc()
        return client

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.quit(timeout=2)
            client.close()


class SmtpMailer:
    def __init__(self, *, pool_size: int = 4, local_hostname: str | None = None) -> None:
        self._pool_size = pool_size
        self._pools: dict[tuple[str, int, str, str | None], _Pool] = {}
        self._local_hostname = local_hostname or socket.gethostname() or "localhost"

    def _pool(self, target: SmtpTarget) -> _Pool:
        pool = self._pools.get(target.pool_key)
        if pool is None or pool.target != target:
            # Same account, changed password or timeout: start over with the new settings.
            pool = self._pools[target.pool_key] = _Pool(target, self._pool_size,
                                                         self._local_hostname)
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
