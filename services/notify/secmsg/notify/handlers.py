"""notify's two consumers: the hot ``message.stored`` one, and the retries (``retry.py``).

Hot: one notification per recipient; whatever must wait (an SMTP deferral, a target that is
down or busy, a tenant's queued renders) is handed to the retry stream and the event acked,
so nothing waits inside the hot consumer's ack-pending window. Retry: a retry delivered
before it is due goes back with the remaining delay; a due one is worked through like a hot
event, and what still waits becomes the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from faststream.nats.message import NatsMessage
from pydantic import ValidationError

from secmsg.notify import retry, service
from secmsg.notify.metrics import RETRIES
from secmsg.shared import subjects, worker
from secmsg.shared.errors import PermanentError
from secmsg.shared.events import MessageStored, utcnow

if TYPE_CHECKING:
    from secmsg.notify.app import NotifyWorker

log = logging.getLogger(__name__)


async def _keep_alive(msg: NatsMessage, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # NATS away: the redelivery is harmless anyway
            await msg.in_progress()


async def raw_message(msg: NatsMessage) -> NatsMessage:
    """The subscriber's decoder: the handler gets the message itself, not its parsed body.

    With the broker's ``apply_types=False`` FastStream calls the handler with whatever the
    decoder returns; the handler decodes and validates the body once, itself.
    """
    return msg


async def _notify(rt: NotifyWorker, msg: NatsMessage, event: MessageStored) -> None:
    # JetStream redelivers an event unacked for ACK_WAIT_S: short, so a killed replica's
    # events come back within seconds; a live handler says "in progress" well within it.
    keepalive = asyncio.create_task(_keep_alive(msg, rt.settings.ack_wait_s / 4))
    try:
        await service.notify_recipients(
            event=event, deliveries=rt.deliveries, mailer=rt.mailer,
            tenants=rt.tenants, publisher=rt.publisher,
            target=await rt.relay.platform_target(),
            policy=rt.policy, platform_from=rt.common.smtp_from,
            public_url=rt.common.retrieve_public_url,
            signer=rt.signer, platform_dkim=rt.platform_dkim,
            undeliverable=rt.undeliverable, bounce_base=rt.bounce_base,
            recipient_hint=rt.recipient_hint, renderer=rt.renderer)
    finally:
        keepalive.cancel()


async def schedule_retry(rt: NotifyWorker, event: MessageStored, *, round_: int,
                         delay: float) -> None:
    """Publish the next try of ``event`` to the retry stream (deduplicated per round)."""
    # A little jitter: a target's many deferred notifications do not all come due at once.
    delay = delay * random.uniform(1.0, 1.1)  # noqa: S311 -- spreading load, not security
    item = retry.NotifyRetry(event=event, round=round_,
                             not_before=utcnow() + timedelta(seconds=delay))
    await rt.retries.publish(item)
    RETRIES.labels("scheduled").inc()


def make_on_message_stored(rt: NotifyWorker) -> Callable[..., Awaitable[None]]:
    async def on_message_stored(msg: NatsMessage) -> None:
        async def handle(event: MessageStored) -> None:
            try:
                await _notify(rt, msg, event)
            except service.RetryLater as exc:
                # Off the hot path: the retry stream holds it until it is due. If that
                # publish fails, the event is nak'ed (infrastructure back-off) and tried again.
                await schedule_retry(rt, event, round_=1, delay=exc.delay)

        def delay_for(attempt: int) -> float:
            # Infrastructure trouble (MongoDB, NATS): start retrying soon, then back off.
            return worker.backoff(attempt, base=min(1.0, rt.policy.retry_base_s),
                                  cap=rt.policy.retry_max_s)

        await worker.process(msg, MessageStored, handle, db=rt.db, service="notify",
                             consumer=subjects.NOTIFY_STORED, backoff_fn=delay_for)

    return on_message_stored


def make_on_retry(rt: NotifyWorker) -> Callable[..., Awaitable[None]]:
    async def on_retry(msg: NatsMessage) -> None:
        subject = msg.raw_message.subject
        try:
            item = retry.NotifyRetry.model_validate_json(msg.body)
        except ValidationError:
            log.error("undecodable retry terminated", extra={"subject": subject})
            await worker.record_dead_letter(rt.db, service="notify", subject=subject,
                                            reason="undecodable retry", body=msg.body)
            await msg.reject()
            return
        wait = (item.not_before - utcnow()).total_seconds()
        if wait > 0.05:
            await msg.nack(delay=wait)  # JetStream's timer brings it back when due
            return
        attempt = msg.raw_message.metadata.num_delivered or 1
        try:
            await _notify(rt, msg, item.event)
        except service.RetryLater as exc:
            try:
                await schedule_retry(rt, item.event, round_=item.round + 1, delay=exc.delay)
            except Exception:
                await msg.nack(delay=min(exc.delay, 5.0))
                return
        except PermanentError as exc:
            log.error("retry failed permanently: %s", exc.detail, extra={"subject": subject})
            await worker.record_dead_letter(rt.db, service="notify", subject=subject,
                                            reason=exc.detail, body=msg.body)
            await msg.reject()
            return
        except Exception:
            delay = worker.backoff(attempt, base=min(1.0, rt.policy.retry_base_s),
                                   cap=rt.policy.retry_max_s)
            log.warning("retry round failed, again in %.1fs", delay, exc_info=True,
                        extra={"subject": subject})
            await msg.nack(delay=delay)
            return
        RETRIES.labels("done").inc()
        await msg.ack()

    return on_retry
