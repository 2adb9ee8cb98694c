# Over 400 lines: pool, lanes, limits and down-detection share one state
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
import time
from collections.abc import AsyncIterator

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from secmsg.notify.metrics import SMTP_CONNECTIONS, TARGETS_DOWN
from secmsg.notify.ports import (
    SmtpPermanentFailure,
    SmtpTarget,
    SmtpTemporaryFailure,
    SmtpUnavailable,
    TargetBusy,
)
from secmsg.shared import smtp_reasons as reasons
from secmsg.shared.smtp_reasons import classify
from secmsg.shared.ssrf import (
    PinnedNameContext,
    TargetRefused,
    TargetUnresolvable,
    resolve_checked,
)

log = logging.getLogger(__name__)


def _reply_error(exc: SMTPResponseException,
                 stage: str) -> SmtpTemporaryFailure | SmtpPermanentFailure:
    # Only the code and our stage name: the server's text never leaves this adapter.
    reason = classify(exc)
    detail = f"SMTP {stage} answered {exc.code}"
    if exc.code >= 500:
        return SmtpPermanentFailure(detail, reason=reason)
    return SmtpTemporaryFailure(detail, reason=reason)


class _TokenBucket:
    """``rate`` sends per second per target, bursts up to one second's worth; 0: unlimited.

    A token is reserved at once (the balance may go negative) and the caller sleeps until its
    turn, so waiters are served in order without polling; a turn further away than
    ``max_wait`` is refused instead (the event comes back later, no handler is held).
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._at = time.monotonic()

    async def take(self, max_wait: float) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        wait = (1 - self._tokens) / self.rate if self._tokens < 1 else 0.0
        if wait > max_wait:
            raise TargetBusy("SMTP target rate used up", retry_in=wait)
        self._tokens -= 1
        if wait > 0:
            await asyncio.sleep(wait)


def _rate(default: float, own: float | None) -> float:
    """The tenant's own limit may only lower the worker's (0 means unlimited on either side)."""
    if own is None or own <= 0:
        return default
    return own if default <= 0 else min(default, own)


class _Pool:
    """Up to ``size`` connections to one target; idle ones wait in a LIFO list.

    The slots are per target. A target that is busy but *moving* (a slot was released within
    ``saturated_wait_s``) lets handlers queue for a slot, up to ``max_waiting``: a backlog for
    one healthy relay is simply worked through. A target that is *stalled* (every slot held,
    none released for ``saturated_wait_s``: a hanging or very slow server) gets no more
    waiters -- new arrivals get ``TargetBusy`` at once, waiters give up after
    ``saturated_wait_s`` -- so it holds at most ``size`` handlers for long and the others stay
    free for other targets. (Sending every waiter beyond a fixed count back, busy or not, made a
    single relay's backlog churn through naks: most events bounced with a delay while four
    connections sent -- measured at a tenth of the throughput.) A rate turn further off than
    ``saturated_wait_s`` is refused too.
    """

    def __init__(self, target: SmtpTarget, size: int, local_hostname: str, *,
                 rate_per_s: float = 0.0, saturated_wait_s: float = 2.0,
                 max_waiting: int = 64, reuse: bool = True, down_s: float = 5.0,
                 down_max_s: float = 300.0, max_rate_wait_s: float | None = None) -> None:
        self.target = target
        self._slots = asyncio.Semaphore(size)
        self._waiting = 0
        self._max_waiting = max_waiting
        self._idle: list[aiosmtplib.SMTP] = []
        self._local_hostname = local_hostname
        self._bucket = _TokenBucket(_rate(rate_per_s, target.rate_per_s))
        self._saturated_wait_s = saturated_wait_s
        self._max_rate_wait_s = (saturated_wait_s if max_rate_wait_s is None
                                 else min(max_rate_wait_s, saturated_wait_s))
        self._wait_s = min(target.timeout_s, saturated_wait_s)
        self._progress_at = time.monotonic()  # last slot released, or all became busy
        self.reuse = reuse
        # Down/up: a connection that failed or hung marks the target down for a cool-off
        # (doubling per failure); then one probe goes through while others still wait.
        self._down_s = down_s
        self._down_max_s = down_max_s
        self._failures = 0
        self._down_until = 0.0
        self._probing = False

    def _check_up(self) -> bool:
        """Raise ``TargetBusy`` while the target is down; True if this caller is the probe."""
        now = time.monotonic()
        if now < self._down_until:
            raise TargetBusy("SMTP target down", retry_in=self._down_until - now)
        if self._failures:
            if self._probing:
                raise TargetBusy("SMTP target being probed", retry_in=self._down_s)
            self._probing = True
            return True
        return False

    def precheck(self) -> None:
        """``TargetBusy`` now if a reservation would be refused anyway (down, probe under
        way, or every connection busy on a stalled target); takes nothing."""
        now = time.monotonic()
        if now < self._down_until:
            raise TargetBusy("SMTP target down", retry_in=self._down_until - now)
        if self._failures and self._probing:
            raise TargetBusy("SMTP target being probed", retry_in=self._down_s)
        if self._slots.locked() and (self._stalled() or self._waiting >= self._max_waiting):
            raise TargetBusy("all SMTP connections busy", retry_in=self._saturated_wait_s)

    def failed(self) -> None:
        """A connection to the target was refused, dropped or timed out."""
        now = time.monotonic()
        if now < self._down_until:
            return  # the same outage seen by another send in flight
        self._failures += 1
        self._down_until = now + min(self._down_max_s,
                                     self._down_s * 2 ** min(self._failures - 1, 20))
        TARGETS_DOWN.labels(self.target.label).inc()
        log.warning("SMTP target %s down for %.0fs", self.target.label,
                    self._down_until - now)

    def succeeded(self) -> None:
        if self._failures:
            log.info("SMTP target %s is up again", self.target.label)
        self._failures = 0
        self._down_until = 0.0

    def _stalled(self) -> bool:
        return time.monotonic() - self._progress_at > self._saturated_wait_s

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        probe = self._check_up()
        try:
            async with self._slot():
                yield
        finally:
            if probe:
                self._probing = False

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and (self._stalled() or self._waiting >= self._max_waiting):
            raise TargetBusy("all SMTP connections busy", retry_in=self._saturated_wait_s)
        self._waiting += 1
        try:
            while True:  # queue while the target keeps freeing slots; leave once it stalls
                try:
                    async with asyncio.timeout(self._wait_s):
                        await self._slots.acquire()
                    break
                except TimeoutError:
                    if self._stalled():
                        raise TargetBusy("all SMTP connections stayed busy",
                                         retry_in=self._saturated_wait_s) from None
        finally:
            self._waiting -= 1
        if self._slots.locked():
            self._progress_at = max(self._progress_at, time.monotonic())  # now all busy
        try:
            await self._bucket.take(self._max_rate_wait_s)
            yield
        finally:
            self._slots.release()
            self._progress_at = time.monotonic()

    def take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        return None

    async def give_back(self, client: aiosmtplib.SMTP) -> None:
        if not client.is_connected:
            return
        if self.reuse:
            self._idle.append(client)
            return
        # One connection per message (SECMSG_NOTIFY_SMTP_REUSE=false): end it politely.
        try:
            await client.quit(timeout=2)
        except Exception:
            client.close()

    def _checked_client(self, address: str) -> aiosmtplib.SMTP:
        t = self.target
        # Connect to the checked address; TLS (implicit or STARTTLS) verifies the host name.
        # start_tls=True refuses a server that does not offer STARTTLS before anything is sent.
        return aiosmtplib.SMTP(
            hostname=address, port=t.port, use_tls=t.tls == "tls",
            start_tls=t.tls == "starttls", username=t.username, password=t.password,
            timeout=t.timeout_s, local_hostname=self._local_hostname,
            tls_context=PinnedNameContext.for_host(t.host, t.ca_file))

    async def _checked_addresses(self) -> list[str]:
        t = self.target
        if t.username and not t.password:
            raise SmtpPermanentFailure("SMTP auth_failed: the stored password is unusable",
                                       reason=reasons.AUTH_FAILED)
        try:
            addrs = await resolve_checked(t.host, t.port, allow=t.allowed_targets)
        except TargetRefused as exc:
            raise SmtpPermanentFailure("SMTP target refused: not a permitted address",
                                       reason=reasons.BLOCKED_TARGET) from exc
        except TargetUnresolvable as exc:
            raise SmtpUnavailable("SMTP target unreachable: host does not resolve",
                                  reason=classify(exc)) from exc
        return [str(a) for a in addrs]

    async def connect(self) -> aiosmtplib.SMTP:
        t = self.target
        if not t.checked:
            client = aiosmtplib.SMTP(
                hostname=t.host, port=t.port, use_tls=t.tls == "tls",
                start_tls=t.tls == "starttls", username=t.username, password=t.password,
                timeout=t.timeout_s, local_hostname=self._local_hostname,
                tls_context=PinnedNameContext.for_host(t.host, t.ca_file) if t.ca_file else None)
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
        raise SmtpUnavailable("SMTP target unreachable", reason=reasons.CONNECTION_REFUSED)

    async def _open(self, client: aiosmtplib.SMTP) -> None:
        t = self.target
        try:
            await client.connect()
        except SMTPResponseException as exc:
            client.close()
            reason = classify(exc)
            if exc.code >= 500 and exc.code != 554:
                raise SmtpPermanentFailure(f"SMTP refused the session: {exc.code}",
                                           reason=reason) from exc
            raise SmtpUnavailable(f"SMTP refused the session: {exc.code}", reason=reason) \
                from exc
        except (SMTPException, OSError) as exc:
            client.close()
            # No plaintext fallback: TLS required and not offered or failed is a failure.
            reason = classify(exc)
            raise SmtpUnavailable(f"SMTP {reason} at {t.label}", reason=reason) from exc
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


class _Lane:
    def __init__(self, mailer: SmtpMailer, pool: _Pool) -> None:
        self._mailer = mailer
        self._pool = pool

    async def send(self, *, envelope_from: str, recipient: str, message: bytes) -> None:
        try:
            await self._mailer._send_in_slot(self._pool, envelope_from=envelope_from,
                                             recipient=recipient, message=message)
        except (SmtpUnavailable, TimeoutError):
            self._pool.failed()  # refused, dropped, hung: others need not try it meanwhile
            raise
        except (SmtpTemporaryFailure, SmtpPermanentFailure):
            raise  # the server answered (or a local refusal): says nothing about it being up
        self._pool.succeeded()


class SmtpMailer:
    def __init__(self, *, pool_size: int = 4, local_hostname: str | None = None,
                 rate_per_s: float = 0.0, platform_rate_per_s: float = 0.0,
                 saturated_wait_s: float = 2.0, max_waiting: int = 64,
                 reuse: bool = True, down_s: float = 5.0, down_max_s: float = 300.0,
                 tenant_max_waiting: int | None = None,
                 tenant_max_rate_wait_s: float | None = None) -> None:
        # A tenant's own server serves one tenant: few handlers may wait for it (the rest of
        # its notifications go to the retry stream), so it cannot take the handlers the other
        # tenants need. The platform relay serves everyone: its backlog queues as before.
        self._tenant_max_waiting = max_waiting if tenant_max_waiting is None \
            else tenant_max_waiting
        self._tenant_max_rate_wait_s = tenant_max_rate_wait_s
        self._down_s = down_s
        self._down_max_s = down_max_s
        self._pool_size = pool_size
        self._rate = rate_per_s
        self._platform_rate = platform_rate_per_s
        self._saturated_wait_s = saturated_wait_s
        self._max_waiting = max_waiting
        self._reuse = reuse
        self._pools: dict[tuple[str, int, str, str | None], _Pool] = {}
        self._local_hostname = local_hostname or socket.gethostname() or "localhost"

    def _pool(self, target: SmtpTarget) -> _Pool:
        pool = self._pools.get(target.pool_key)
        if pool is None or pool.target != target:
            # Same account, changed password, timeout or rate: start over with the new settings.
            pool = self._pools[target.pool_key] = _Pool(
                target, self._pool_size, self._local_hostname,
                # a tenant's own server (checked) vs the platform's relay: separate defaults
                rate_per_s=self._rate if target.checked else self._platform_rate,
                saturated_wait_s=self._saturated_wait_s,
                max_waiting=self._tenant_max_waiting if target.checked else self._max_waiting,
                max_rate_wait_s=self._tenant_max_rate_wait_s if target.checked else None,
                reuse=self._reuse, down_s=self._down_s, down_max_s=self._down_max_s)
        return pool

    def precheck(self, target: SmtpTarget) -> None:
        self._pool(target).precheck()

    @contextlib.asynccontextmanager
    async def reserve(self, target: SmtpTarget) -> AsyncIterator[_Lane]:
        pool = self._pool(target)
        async with pool.slot():
            yield _Lane(self, pool)

    async def send(self, target: SmtpTarget, *, envelope_from: str, recipient: str,
                   message: bytes) -> None:
        async with self.reserve(target) as lane:
            await lane.send(envelope_from=envelope_from, recipient=recipient, message=message)

    async def _send_in_slot(self, pool: _Pool, *, envelope_from: str, recipient: str,
                            message: bytes) -> None:
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
            reason = classify(exc)
            raise SmtpUnavailable(f"SMTP {reason} at {stage}", reason=reason) from exc
        except SMTPResponseException as exc:
            await self._reset_and_keep(pool, client)
            raise _reply_error(exc, stage) from exc
        except SMTPException as exc:
            if client is not None:
                client.close()
            reason = classify(exc)
            raise SmtpUnavailable(f"SMTP {reason} at {stage}", reason=reason) from exc
        except BaseException:
            # Cancelled or a bug mid-conversation: the session state is unknown.
            if client is not None:
                client.close()
            raise
        await pool.give_back(client)

    @staticmethod
    async def _reset_and_keep(pool: _Pool, client: aiosmtplib.SMTP | None) -> None:
        if client is None:
            return
        try:
            await client.rset()
        except Exception:
            client.close()
            return
        await pool.give_back(client)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()
