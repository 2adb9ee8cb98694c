"""Thin JetStream subscribers: decode, call the service, ack/nak/terminate via worker.process.

All four use durable pull consumers on the ``SECMSG`` stream; replicas share the durable, so
JetStream hands each event to one of them. Delivery states come in batches
(``worker.process_batch``): recording them one at a time cost more CPU than sending the mail.

The broker runs with ``apply_types=False`` and an identity decoder, so each handler gets the
FastStream message itself and ``worker`` parses the body once (no FastDepends per event).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_args

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage, NatsMessage
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import subjects, worker
from secmsg.shared.crypto import KeyRing
from secmsg.shared.events import (
    KeyRotationRequested,
    MessageExpiryChanged,
    MessageRecalled,
    MessageReceived,
)
from secmsg.store import control, rewrap, service
from secmsg.store.ports import (
    AuditRepo,
    BlobStore,
    DeliveryRepo,
    MessageRepo,
    Publisher,
    PurgeClaims,
    RotationRepo,
    TenantPolicies,
    UndeliverableRepo,
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
    undeliverable: UndeliverableRepo
    rotations: RotationRepo
    tenants: TenantPolicies
    keyring: KeyRing
    owner: str


@contextlib.asynccontextmanager
async def kept_alive(msg: NatsMessage, every_s: float) -> AsyncIterator[None]:
    """Tell JetStream "still working" (``+WPI``, restarts ``ack_wait``) while a long job runs,
    so the event is not redelivered to another replica mid-job."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):  # a missed beat only risks a redelivery
                await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
                                                   blobs=d.blobs, publisher=d.publisher,
                                                   audit=d.audit))

    # A partial batch is handled after ``delivery_batch_wait_s``, so the wait bounds the added
    # latency; under load the batch fills first.
    @subscribe(subjects.any_tenant("notification.>"), subjects.STORE_DELIVERY,
               PullSub(batch_size=cfg.delivery_batch_size, timeout=cfg.delivery_batch_wait_s,
                       batch=True))
    async def on_notification_events(batch: NatsBatchMessage) -> None:
        d = get_deps()

        async def handle(events: list[service.DeliveryEvent]) -> None:
            await service.record_deliveries(events=events, deliveries=d.deliveries,
                                            audit=d.audit, undeliverable=d.undeliverable)

        await worker.process_batch(
            batch.raw_message, get_args(service.DeliveryEvent), handle, db=d.db,
            service=SERVICE, consumer=subjects.STORE_DELIVERY, backoff_fn=backoff)

    @subscribe(subjects.any_tenant("audit.>"), subjects.STORE_AUDIT)
    async def on_audit_event(msg: NatsMessage) -> None:
        d = get_deps()
        await run(msg, get_args(service.AuditEvent),
                  subjects.STORE_AUDIT, lambda e: service.record_audit(event=e, audit=d.audit))

    # One event per fetch: a key rotation can run for minutes, and events fetched behind it
    # would sit out their ack_wait and be redelivered.
    @subscribe(subjects.any_tenant("control.>"), subjects.STORE_CONTROL,
               PullSub(batch_size=1, timeout=cfg.fetch_timeout_s))
    async def on_control_event(msg: NatsMessage) -> None:
        d = get_deps()
        attempt = msg.raw_message.metadata.num_delivered or 1

        async def handle(e: Any) -> None:
            if isinstance(e, MessageRecalled):
                await control.recall_message(event=e, messages=d.messages, claims=d.claims,
                                             blobs=d.blobs, audit=d.audit, owner=d.owner,
                                             lease_s=cfg.purge_lease_s)
            elif isinstance(e, MessageExpiryChanged):
                await control.change_expiry(event=e, messages=d.messages, claims=d.claims,
                                            audit=d.audit, owner=d.owner,
                                            lease_s=cfg.purge_lease_s, attempt=attempt,
                                            missing_retries=cfg.control_missing_retries)
            else:
                async with kept_alive(msg, cfg.ack_wait_s / 3):
                    await rewrap.rotate_keys(
                        event=e, messages=d.messages, claims=d.claims, rotations=d.rotations,
                        audit=d.audit, keyring=d.keyring, owner=d.owner,
                        lease_s=cfg.purge_lease_s, page_size=cfg.rewrap_page_size,
                        progress_every=cfg.rewrap_progress_every, pause_s=cfg.rewrap_pause_s)

        await run(msg, (MessageRecalled, MessageExpiryChanged, KeyRotationRequested),
                  subjects.STORE_CONTROL, handle)
