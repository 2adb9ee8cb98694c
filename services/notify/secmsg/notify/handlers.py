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
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from faststream.exceptions import NackMessage
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client as NATS
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.notify import retry, service
from secmsg.notify.metrics import RETRIES
from secmsg.notify.ports import (
    DeliveryRepo,
    DkimKey,
    Mailer,
    Publisher,
    RelayChooser,
    Signer,
    TenantDirectory,
    UndeliverableList,
)
from secmsg.notify.settings import NotifySettings
from secmsg.shared import bus, subjects, templating, worker
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.events import MessageStored, utcnow
from secmsg.shared.settings import CommonSettings

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """What the consumers use of the running service (``app.NotifyWorker`` is one); a
    protocol, so this module does not import the app that registers it."""

    @property
    def settings(self) -> NotifySettings: ...
    @property
    def common(self) -> CommonSettings: ...
    @property
    def broker(self) -> NatsBroker: ...
    @property
    def db(self) -> AsyncDatabase[Any]: ...
    @property
    def policy(self) -> service.NotifyPolicy: ...
    @property
    def deliveries(self) -> DeliveryRepo: ...
    @property
    def mailer(self) -> Mailer: ...
    @property
    def tenants(self) -> TenantDirectory: ...
    @property
    def publisher(self) -> Publisher: ...
    @property
    def retries(self) -> retry.RetryPublisher: ...
    @property
    def relay(self) -> RelayChooser: ...
    @property
    def signer(self) -> Signer: ...
    @property
    def platform_dkim(self) -> DkimKey | None: ...
    @property
    def undeliverable(self) -> UndeliverableList: ...
    @property
    def bounce_base(self) -> str | None: ...
    @property
    def recipient_hint(self) -> Callable[[str, str, str], str]: ...
    @property
    def renderer(self) -> templating.RenderPool: ...
    @property
    def nc(self) -> NATS | None: ...


async def _keep_alive(msg: NatsMessage, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # NATS away: the redelivery is harmless anyway
            await msg.in_progress()


def _current_message(rt: Runtime) -> NatsMessage:
    """The JetStream message being handled, from FastStream's context.

    Not asked for as a handler parameter (``msg: NatsMessage``): fast_depends resolves that
    ``Context`` field with a synchronous function, which it runs in a worker thread -- a
    thread hand-off per event, about a tenth of notify's CPU in a profile (docs/cost.md)."""
    msg: NatsMessage = rt.broker.context.get_local("message")
    return msg


async def _notify(rt: Runtime, msg: NatsMessage, event: MessageStored) -> None:
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


async def schedule_retry(rt: Runtime, event: MessageStored, *, round_: int,
                         delay: float) -> None:
    """Publish the next try of ``event`` to the retry stream (deduplicated per round)."""
    # A little jitter: a target's many deferred notifications do not all come due at once.
    delay = delay * random.uniform(1.0, 1.1)  # noqa: S311 -- spreading load, not security
    item = retry.NotifyRetry(event=event, round=round_,
                             not_before=utcnow() + timedelta(seconds=delay))
    await rt.retries.publish(item)
    RETRIES.labels("scheduled").inc()


def _dead_letters(rt: Runtime) -> worker.PublishedDeadLetters:
    if rt.nc is None:  # not started: the event is nak'ed and comes back
        raise DependencyUnavailable("event bus not connected: dead letter not recorded")
    return worker.PublishedDeadLetters(rt.nc)


def register(rt: Runtime) -> worker.EventWorker:
    """notify's two consumers on ``rt.broker`` (``worker.EventWorker``: typed handlers, acks
    by outcome, finite ``max_deliver`` then a dead letter); the returned worker ensures them."""
    cfg = rt.settings
    events = worker.EventWorker(
        rt.broker, service="notify",
        # Infrastructure trouble (MongoDB, NATS): retry soon, then back off; SMTP waits never
        # come here (they go to the retry stream).
        policy=worker.DeliveryPolicy(max_deliver=cfg.max_deliver,
                                     backoff_base_s=min(1.0, cfg.retry_base_s),
                                     backoff_cap_s=cfg.retry_max_s, ack_wait_s=cfg.ack_wait_s),
        # store owns dead_letters: notify's go to it as events
        dead_letters=lambda: _dead_letters(rt),
        inbox_prefix=bus.subscriber_inbox(rt.common))

    # Nothing waits in this consumer (retries go to the retry stream): its window only needs
    # to cover the events in flight on every replica. Events fetched but still queued for a
    # free handler are kept alive too (keep_alive_held): the ack wait is short (6 s).
    @events.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED),
                       durable=subjects.NOTIFY_STORED, batch_size=cfg.concurrency,
                       fetch_timeout_s=cfg.fetch_timeout_s, max_workers=cfg.concurrency,
                       max_ack_pending=cfg.max_ack_pending, keep_alive_held=True)
    async def on_message_stored(event: MessageStored) -> None:
        try:
            await _notify(rt, _current_message(rt), event)
        except service.RetryLater as exc:
            # Off the hot path: the retry stream holds it until it is due. If that publish
            # fails, the event is nak'ed (infrastructure back-off) and tried again.
            await schedule_retry(rt, event, round_=1, delay=exc.delay)

    # Holds every notification waiting for its time (nak with the remaining delay), so a
    # large window; each round is a new message, so a few deliveries per message suffice.
    @events.subscriber(retry.any_tenant(), durable=retry.CONSUMER, stream=retry.STREAM,
                       batch_size=cfg.retry_concurrency, fetch_timeout_s=cfg.fetch_timeout_s,
                       max_workers=cfg.retry_concurrency,
                       max_ack_pending=cfg.retry_max_ack_pending, keep_alive_held=True,
                       policy=worker.DeliveryPolicy(
                           max_deliver=cfg.max_deliver + 2,
                           backoff_base_s=min(1.0, cfg.retry_base_s),
                           backoff_cap_s=cfg.retry_max_s, ack_wait_s=cfg.ack_wait_s))
    async def on_retry(item: retry.NotifyRetry) -> None:
        wait = (item.not_before - utcnow()).total_seconds()
        if wait > 0.05:
            raise NackMessage(delay=wait)  # JetStream's timer brings it back when due
        try:
            await _notify(rt, _current_message(rt), item.event)
        except service.RetryLater as exc:
            await schedule_retry(rt, item.event, round_=item.round + 1, delay=exc.delay)
            return
        RETRIES.labels("done").inc()

    return events
