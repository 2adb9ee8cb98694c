"""Thin JetStream subscribers: decode, call the service, ack/nak/terminate via worker.process.

All three use durable pull consumers on the ``SECMSG`` stream; replicas share the durable, so
JetStream hands each event to one of them. Delivery states come in batches
(``worker.process_batch``): recording them one at a time cost more CPU than sending the mail.

The broker runs with ``apply_types=False`` and an identity decoder, so each handler gets the
FastStream message itself and ``worker`` parses the body once (no FastDepends per event).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage, NatsMessage
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import subjects, worker
from secmsg.shared.events import (
    AttachmentDownloaded,
    MessageOpened,
    MessageReceived,
    NotificationDeferred,
    NotificationFailed,
    NotificationSent,
)
from secmsg.store import service
from secmsg.store.ports import (
    AuditRepo,
    BlobStore,
    DeliveryRepo,
    MessageRepo,
    Publisher,
    PurgeClaims,
)
from secmsg.store.settings import StoreSettings

SERVICE = "store"


@dataclass
class Deps:
    """Clients built at start-up (see app.py); handlers read them at call time."""

    db: AsyncDatabase[Any]
    messages: MessageRepo
    claims: PurgeClaims
    deliveries: DeliveryRepo
    audit: AuditRepo
    blobs: BlobStore
    publisher: Publisher


async def as_is(msg: Any) -> Any:
    """The subscribers' decoder: hand the message (or batch) over unparsed."""
    return msg


def register(broker: NatsBroker, get_deps: Callable[[], Deps], cfg: StoreSettings) -> None:
    stream = JStream(subjects.STREAM, declare=False)

    def backoff(attempt: int) -> float:
        return worker.backoff(attempt, base=cfg.backoff_base_s, cap=cfg.backoff_cap_s)

    def subscribe(filter_subject: str, durable: str,
                  pull_sub: PullSub[Any] | None = None) -> Callable[[Any], Any]:
        return broker.subscriber(
            filter_subject, stream=stream, durable=durable,
            pull_sub=pull_sub or PullSub(batch_size=cfg.batch_size,
                                         timeout=cfg.fetch_timeout_s),
            ack_policy=AckPolicy.MANUAL, decoder=as_is,
            config=ConsumerConfig(ack_wait=cfg.ack_wait_s, max_deliver=-1))

    async def run(msg: NatsMessage, expected: Any, consumer: str,
                  handle: Callable[[Any], Awaitable[object]]) -> None:
        d = get_deps()

        async def handler(event: Any) -> None:
            await handle(event)

        await worker.process(msg, expected, handler, db=d.db, service=SERVICE,
                             consumer=consumer, backoff_fn=backoff)

    @subscribe(subjects.any_tenant(subjects.MESSAGE_RECEIVED), subjects.STORE_RECEIVED)
    async def on_message_received(msg: NatsMessage) -> None:
        d = get_deps()
        await run(msg, MessageReceived, subjects.STORE_RECEIVED,
                  lambda e: service.record_message(event=e, messages=d.messages,
                                                   blobs=d.blobs, publisher=d.publisher))

    # A partial batch is handled after ``delivery_batch_wait_s``, so the wait bounds the added
    # latency; under load the batch fills first.
    @subscribe(subjects.any_tenant("notification.>"), subjects.STORE_DELIVERY,
               PullSub(batch_size=cfg.delivery_batch_size, timeout=cfg.delivery_batch_wait_s,
                       batch=True))
    async def on_notification_events(batch: NatsBatchMessage) -> None:
        d = get_deps()

        async def handle(events: list[service.DeliveryEvent]) -> None:
            await service.record_deliveries(events=events, deliveries=d.deliveries)

        await worker.process_batch(
            batch.raw_message, (NotificationSent, NotificationDeferred, NotificationFailed),
            handle, db=d.db, service=SERVICE, consumer=subjects.STORE_DELIVERY,
            backoff_fn=backoff)

    @subscribe(subjects.any_tenant("audit.>"), subjects.STORE_AUDIT)
    async def on_audit_event(msg: NatsMessage) -> None:
        d = get_deps()
        await run(msg, (MessageOpened, AttachmentDownloaded), subjects.STORE_AUDIT,
                  lambda e: service.record_audit(event=e, audit=d.audit))
