# Over 400 lines: one event's notification in the order it happens
"""The notify logic: one notification per recipient of a stored message, exactly once.

For each recipient, in order:

1. **claim** the recipient ``<tenant>:<message_id>:<address lower>`` with a lease
   (``DeliveryRepo.claim``; the claims live in a NATS JetStream KV bucket, ``adapters/kv.py``):
   a fresh claim, a ``deferred`` one, or a ``sending`` one whose owner process is gone (its
   heartbeat lapsed) or whose lease ran out is ours; ``sent``/``failed`` is final (its event
   is published
   again -- the Nats-Msg-Id drops the copy); a live lease held by another worker means "later".
2. **send** through the ``Mailer`` within the lease.
3. **record** ``sent`` and publish ``notification.sent`` side by side (both state what the
   SMTP server did); ``deferred`` / ``failed``: record, then publish the matching event.

The one unavoidable duplicate window: the SMTP server has accepted the message (250 after
DATA) and this process dies before step 3 stores ``sent``. Its claims name it as owner and
its heartbeat key lapses within ``OWNER_TTL_S``; the redelivered event then takes the claim
over and the recipient is notified a second time -- with the same Message-ID. So a crash
duplicates at most the SMTP transactions in flight at that moment. A live process never
resends what SMTP accepted: when ``sent`` cannot be written (NATS down) the repo keeps the
fact in memory and writes it when NATS answers (``adapters/kv.py``).

Before the claim, the recipient's lane to the SMTP target is reserved
(``Mailer.reserve``): a target that is down (a connection failed or hung), whose connections
are all busy, or whose rate is used up, answers ``TargetBusy`` at once and the event comes
back later -- nothing claimed, no handler parked on one slow server. An address on the
tenant's ``undeliverable`` list (hard bounces, one query per event) is failed with reason
``undeliverable`` instead of sent. Every notification is DKIM-signed: the tenant's key when
it has one, else the platform's.

Reasons (events, claims, logs, metrics) are the fixed words of ``secmsg.shared.smtp_reasons``.

Temporary failures (4xx, connection trouble) leave the recipient ``deferred``; this raises
:class:`RetryLater` and the handler puts the event on the retry stream (``retry.py``) for its
next try, off the hot consumer; recipients already ``sent`` are skipped then. A temporary
failure (or a target down) past ``give_up_after_s`` (counted from the message's
``received_at``), a 5xx reply or invalid data (e.g. a line break in a header value) makes
the recipient ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

from secmsg.notify.compose import RenderedEvent, render_event, uses_tenant_templates
from secmsg.notify.metrics import DELIVERY_PROBLEMS, NOTIFICATIONS, SMTP_SEND_SECONDS
from secmsg.notify.ports import (
    Claim,
    DeliveryRepo,
    DkimKey,
    Lane,
    Mailer,
    Publisher,
    Signer,
    SmtpPermanentFailure,
    SmtpTarget,
    SmtpTemporaryFailure,
    SmtpUnavailable,
    TargetBusy,
    TenantBranding,
    TenantDirectory,
    UndeliverableList,
)
from secmsg.shared import smtp_reasons as reasons
from secmsg.shared import templating
from secmsg.shared.errors import DependencyUnavailable, InvalidInput, TransientError
from secmsg.shared.events import (
    MessageStored,
    NotificationDeferred,
    NotificationFailed,
    NotificationSent,
    event_msg_id,
    utcnow,
)
from secmsg.shared.worker import backoff

log = logging.getLogger(__name__)

# Fraction of the lease the SMTP exchange may use; the rest covers recording the outcome.
_SEND_SHARE_OF_LEASE = 0.8
_MARK_SENT_TRIES = 3


@dataclass(frozen=True)
class NotifyPolicy:
    lease_s: float = 120.0
    retry_base_s: float = 30.0
    retry_max_s: float = 3600.0
    give_up_after_s: float = 172800.0


class RetryLater(TransientError):
    """Some recipients are not notified yet; redeliver the event after ``delay`` seconds."""

    code = "retry_later"

    def __init__(self, detail: str, *, delay: float) -> None:
        super().__init__(detail)
        self.delay = delay


def delivery_key(tenant_id: str, message_id: str, address: str) -> str:
    return f"{tenant_id}:{message_id}:{address.lower()}"


def recipient_hash(address: str) -> str:
    """What logs carry instead of an address."""
    return sha256(address.lower().encode()).hexdigest()[:12]


def unique_recipients(event: MessageStored) -> list[str]:
    """Each address once (To and Cc may repeat one), in the sender's order."""
    seen: set[str] = set()
    out: list[str] = []
    for r in event.recipients:
        if r.address.lower() not in seen:
            seen.add(r.address.lower())
            out.append(r.address)
    return out


@dataclass(frozen=True)
class _Later:
    delay: float
    smtp_down: bool = False


@dataclass
class _Ctx:
    event: MessageStored
    deliveries: DeliveryRepo
    mailer: Mailer
    publisher: Publisher
    target: SmtpTarget
    policy: NotifyPolicy
    branding: TenantBranding
    platform_from: str
    public_url: str
    clock: Callable[[], datetime]
    signer: Signer | None = None
    platform_dkim: DkimKey | None = None
    bounce_base: str | None = None
    hinter: Callable[[str], str] | None = None
    blocked: frozenset[str] = frozenset()
    # Tenant templates render there, off the event loop (a slow one must not stall others).
    renderer: templating.RenderPool | None = None
    # The event's rendering, shared by its recipients; made at the first claimed recipient
    # (a redelivery whose recipients are all final renders nothing).
    rendered: RenderedEvent | InvalidInput | None = None

    async def render(self) -> RenderedEvent:
        if self.rendered is None:
            kwargs: dict[str, Any] = {
                "event": self.event, "branding": self.branding,
                "platform_from": self.platform_from, "public_url": self.public_url,
                "bounce_base": self.bounce_base, "hinter": self.hinter}
            try:
                if self.renderer is not None and uses_tenant_templates(self.branding):
                    self.rendered = await self.renderer.run(
                        self.event.tenant_id, functools.partial(
                            render_event, limits=self.renderer.limits, **kwargs))
                else:  # the shipped defaults: ours, about a millisecond
                    self.rendered = render_event(**kwargs)
            except InvalidInput as exc:
                self.rendered = exc
        if isinstance(self.rendered, InvalidInput):
            raise InvalidInput(self.rendered.detail)
        return self.rendered

    def sign(self, data: bytes) -> bytes:
        key = self.branding.dkim or self.platform_dkim
        if self.signer is None or key is None:
            return data
        try:
            return self.signer.sign(data, key)
        except Exception as exc:
            # A key that cannot sign (e.g. a tenant stored a broken one) must not stop the
            # notification: it goes out unsigned, and the operator hears about it.
            log.warning("DKIM signing failed (%s); sent unsigned", type(exc).__name__,
                        extra={"tenant_id": self.event.tenant_id})
            return data


async def notify_recipients(*, event: MessageStored, deliveries: DeliveryRepo, mailer: Mailer,
                            tenants: TenantDirectory, publisher: Publisher, target: SmtpTarget,
                            policy: NotifyPolicy, platform_from: str, public_url: str,
                            clock: Callable[[], datetime] = utcnow,
                            heartbeat: Callable[[], Awaitable[None]] | None = None,
                            signer: Signer | None = None, platform_dkim: DkimKey | None = None,
                            undeliverable: UndeliverableList | None = None,
                            bounce_base: str | None = None,
                            recipient_hint: Callable[[str, str, str], str] | None = None,
                            renderer: templating.RenderPool | None = None,
                            ) -> None:
    """Notify every recipient of ``event`` once; raise ``RetryLater`` if some must wait."""
    if not event.notify:
        # The sender's own server delivered the placeholder (an RFC 5322 submission).
        log.info("message.stored says notify=false; no notifications sent")
        return
    branding = await tenants.branding(event.tenant_id)
    # The tenant's own SMTP server when it chose one, else the platform's (``target``).
    recipients = unique_recipients(event)
    blocked = (await undeliverable.blocked(event.tenant_id, recipients)
               if undeliverable is not None else set())
    ctx = _Ctx(event=event, deliveries=deliveries, mailer=mailer, publisher=publisher,
               target=branding.smtp or target, policy=policy, branding=branding,
               platform_from=platform_from, public_url=public_url, clock=clock,
               signer=signer, platform_dkim=platform_dkim, bounce_base=bounce_base,
               hinter=(functools.partial(recipient_hint, event.tenant_id, event.message_id)
                       if recipient_hint is not None else None),
               blocked=frozenset(blocked), renderer=renderer)
    waiting: list[_Later] = []
    for i, address in enumerate(recipients):
        if heartbeat is not None and i > 0:
            # Extends the event's ack wait while a long recipient list is worked through; the
            # first recipient starts right after the delivery, with the whole ack wait ahead.
            await heartbeat()
        later = await _notify_one(ctx, address)
        if later is None:
            continue
        waiting.append(later)
        if later.smtp_down:
            # The server is unreachable or saturated: the others would only wait the same.
            # They are not claimed, so the redelivery simply tries them then.
            log.info("SMTP unavailable or busy; %d recipient(s) left for the retry",
                     len(recipients) - i - 1)
            break
    if waiting:
        raise RetryLater(f"{len(waiting)} recipient(s) not notified yet",
                         delay=min(w.delay for w in waiting))


async def _notify_one(ctx: _Ctx, address: str) -> _Later | None:
    if address.lower() in ctx.blocked:
        return await _claim_and_send(ctx, address, None)
    try:
        # A target known to be down (or stalled) sends the event back before any work:
        # a down tenant's flood must cost the hot path as little as possible.
        ctx.mailer.precheck(ctx.target)
        try:
            # Before any claim or SMTP slot: a tenant whose slow templates are queued up
            # hands the event back instead of parking a handler other tenants need.
            await ctx.render()
        except templating.RenderBusy as exc:
            log.info("tenant's template renders queued up; event back in %.1fs", exc.retry_in)
            return _Later(delay=exc.retry_in, smtp_down=True)
        except InvalidInput:
            pass  # remembered in ctx.rendered; the recipient fails once claimed
        async with contextlib.AsyncExitStack() as held:
            lane = await held.enter_async_context(ctx.mailer.reserve(ctx.target))
            # The connection slot goes back as soon as the SMTP exchange is over: recording
            # the outcome and publishing its event (two NATS round trips) need no slot.
            return await _claim_and_send(ctx, address, lane, release=held.aclose)
    except TargetBusy as exc:
        if _past_give_up(ctx):
            # Down (or saturated) for longer than anyone waits: the recipient fails.
            return await _claim_and_send(ctx, address, None, reason=reasons.GAVE_UP)
        # Nothing claimed: the event simply comes back. Not a deferral of the recipient.
        DELIVERY_PROBLEMS.labels(ctx.target.label, "busy").inc()
        log.info("SMTP target busy; event back in %.1fs", exc.retry_in,
                 extra={"recipient_hash": recipient_hash(address)})
        return _Later(delay=max(0.05, exc.retry_in), smtp_down=True)


def _past_give_up(ctx: _Ctx) -> bool:
    received = ctx.event.received_at
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    return (ctx.clock() - received).total_seconds() >= ctx.policy.give_up_after_s


async def _claim_and_send(ctx: _Ctx, address: str, lane: Lane | None, *,
                          reason: str = reasons.UNDELIVERABLE,
                          release: Callable[[], Awaitable[None]] | None = None,
                          ) -> _Later | None:
    now = ctx.clock()
    key = delivery_key(ctx.event.tenant_id, ctx.event.message_id, address)
    claim = await ctx.deliveries.claim(
        key, now=now, lease_until=now + timedelta(seconds=ctx.policy.lease_s))
    if claim.outcome == "final":
        await _republish_final(ctx, address, claim)
        return None
    if claim.outcome == "busy":
        remaining = ((claim.lease_until - now).total_seconds() if claim.lease_until
                     else 1.0)
        log.info("recipient held by another worker", extra={
            "recipient_hash": recipient_hash(address), "attempt": claim.attempts})
        return _Later(delay=max(0.1, remaining) + 0.1)

    try:
        return await _send_claimed(ctx, key, address, lane, claim, now, reason, release)
    finally:
        # Whatever happened, this coroutine no longer works on the recipient (a kept SMTP
        # acceptance stays marked in the repo until it is recorded).
        ctx.deliveries.release(key)


async def _send_claimed(ctx: _Ctx, key: str, address: str, lane: Lane | None, claim: Claim,
                        now: datetime, reason: str,
                        release: Callable[[], Awaitable[None]] | None = None,
                        ) -> _Later | None:
    attempt = claim.attempts
    if lane is None:  # the address hard-bounced before, or its target was down too long
        await _fail(ctx, key, address, attempt, reason)
        return None
    try:
        note = (await ctx.render()).for_recipient(address, now=now)
        data = ctx.sign(note.as_bytes())
    except InvalidInput as exc:
        log.warning("notification not built: %s", exc.code,
                    extra={"recipient_hash": recipient_hash(address)})
        await _fail(ctx, key, address, attempt, reasons.INVALID_MESSAGE)
        return None

    started = time.perf_counter()
    try:
        try:
            async with asyncio.timeout(ctx.policy.lease_s * _SEND_SHARE_OF_LEASE):
                await lane.send(envelope_from=note.envelope_from, recipient=note.recipient,
                                message=data)
        finally:
            if release is not None:
                await release()
    except SmtpPermanentFailure as exc:
        _observe_send(ctx, started, "permanent")
        await _fail(ctx, key, address, attempt, exc.reason)
        return None
    except SmtpTemporaryFailure as exc:
        _observe_send(ctx, started, "temporary")
        return await _defer(ctx, key, address, attempt, exc.reason,
                            smtp_down=isinstance(exc, SmtpUnavailable))
    except TimeoutError:
        _observe_send(ctx, started, "temporary")
        return await _defer(ctx, key, address, attempt, reasons.TIMEOUT, smtp_down=True)
    _observe_send(ctx, started, "accepted")
    await _record_sent(ctx, key, address, attempt)
    return None


def _observe_send(ctx: _Ctx, started: float, result: str) -> None:
    SMTP_SEND_SECONDS.labels(ctx.target.label, result).observe(time.perf_counter() - started)


async def _record_sent(ctx: _Ctx, key: str, address: str, attempt: int) -> None:
    ev = NotificationSent(tenant_id=ctx.event.tenant_id, message_id=ctx.event.message_id,
                          recipient=address, attempt=attempt, smtp_target=ctx.target.label)
    # The event goes out beside the ``sent`` record, not after it: both say what the SMTP
    # server already did, in either order -- one NATS write and one round trip fewer per
    # notification. The event is acked only once both are in (either failing sends it back:
    # the claim then finds ``sent``, or the acceptance kept in memory, and publishes again --
    # the Nats-Msg-Id drops the copy).
    published = asyncio.ensure_future(
        ctx.publisher.publish(ev, event_msg_id(ev, address.lower())))
    try:
        await _mark_sent(ctx, key, address, attempt)
    except BaseException:
        published.cancel()
        with contextlib.suppress(BaseException):
            await published
        raise
    NOTIFICATIONS.labels(ctx.event.tenant_id, "sent", ctx.target.label).inc()
    log.info("notification sent", extra={"recipient_hash": recipient_hash(address),
                                         "attempt": attempt})
    await published


async def _mark_sent(ctx: _Ctx, key: str, address: str, attempt: int) -> None:
    # The duplicate window (module docstring) is open until this write lands: retry it a few
    # times rather than give the recipient to the lease expiry at the first hiccup.
    for n in range(1, _MARK_SENT_TRIES + 1):
        try:
            await ctx.deliveries.mark_sent(key, now=ctx.clock(), smtp_target=ctx.target.label)
            return
        except DependencyUnavailable:
            if n == _MARK_SENT_TRIES:
                # The repo keeps the acceptance and writes it once NATS answers; meanwhile
                # this process never sends it again and other replicas see a live owner.
                log.warning("SMTP accepted but 'sent' could not be recorded yet; kept in "
                            "memory until NATS answers", extra={
                                "recipient_hash": recipient_hash(address), "attempt": attempt})
                raise
            await asyncio.sleep(0.2 * n)


async def _defer(ctx: _Ctx, key: str, address: str, attempt: int, reason: str, *,
                 smtp_down: bool) -> _Later | None:
    now = ctx.clock()
    received = ctx.event.received_at
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    if (now - received).total_seconds() >= ctx.policy.give_up_after_s:
        log.info("giving up after %.0fs (last: %s)", ctx.policy.give_up_after_s, reason,
                 extra={"recipient_hash": recipient_hash(address), "attempt": attempt})
        await _fail(ctx, key, address, attempt, reasons.GAVE_UP)
        return None
    delay = backoff(attempt, base=ctx.policy.retry_base_s, cap=ctx.policy.retry_max_s)
    retry_at = now + timedelta(seconds=delay)
    await ctx.deliveries.mark_deferred(key, now=now, reason=reason, retry_at=retry_at)
    NOTIFICATIONS.labels(ctx.event.tenant_id, "deferred", ctx.target.label).inc()
    DELIVERY_PROBLEMS.labels(ctx.target.label, reason).inc()
    log.warning("notification deferred, retry in %.1fs: %s", delay, reason, extra={
        "recipient_hash": recipient_hash(address), "attempt": attempt})
    ev = NotificationDeferred(tenant_id=ctx.event.tenant_id, message_id=ctx.event.message_id,
                              recipient=address, attempt=attempt, reason=reason,
                              retry_at=retry_at)
    await ctx.publisher.publish(ev, event_msg_id(ev, address.lower(), str(attempt)))
    return _Later(delay=delay, smtp_down=smtp_down)


async def _fail(ctx: _Ctx, key: str, address: str, attempt: int, reason: str) -> None:
    await ctx.deliveries.mark_failed(key, now=ctx.clock(), reason=reason)
    NOTIFICATIONS.labels(ctx.event.tenant_id, "failed", ctx.target.label).inc()
    DELIVERY_PROBLEMS.labels(ctx.target.label, reason).inc()
    log.error("notification failed: %s", reason, extra={
        "recipient_hash": recipient_hash(address), "attempt": attempt})
    ev = NotificationFailed(tenant_id=ctx.event.tenant_id, message_id=ctx.event.message_id,
                            recipient=address, attempt=attempt, reason=reason)
    await ctx.publisher.publish(ev, event_msg_id(ev, address.lower()))


async def _republish_final(ctx: _Ctx, address: str, claim: Claim) -> None:
    """A redelivery after a crash between recording and publishing: publish again (deduped)."""
    base = {"tenant_id": ctx.event.tenant_id, "message_id": ctx.event.message_id,
            "recipient": address, "attempt": max(1, claim.attempts)}
    ev: NotificationSent | NotificationFailed
    if claim.state == "sent":
        ev = NotificationSent(**base, smtp_target=claim.smtp_target or ctx.target.label)
    else:
        ev = NotificationFailed(**base, reason=claim.reason or "failed")
    await ctx.publisher.publish(ev, event_msg_id(ev, address.lower()))
