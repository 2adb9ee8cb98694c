"""Thin typed JetStream subscribers: FastStream decodes the event, the service does the work.

All four use durable pull consumers on the ``SECMSG`` stream (``worker.EventWorker``);
replicas share the durable, so JetStream hands each event to one of them. The handler's
outcome decides the acknowledgement (``worker`` module docstring): return -> ack,
``TransientError`` or a bug -> nak with back-off, ``PermanentError`` / poison / the
``max_deliver``-th failure -> dead letter and terminate. Delivery states come in batches:
recording them one at a time cost more CPU than sending the mail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import subjects, worker
from secmsg.shared.crypto import KeyRing
from secmsg.shared.events import (
    KeyRotationRequested,
    MessageExpiryChanged,
    MessageRecalled,
    MessageReceived,
    UndeliverableCleared,
)
from secmsg.store import control, rewrap, service
from secmsg.store.ports import (
    AuditEvent,
    AuditRepo,
    BlobStore,
    DeadLetterRepo,
    DeliveryEvent,
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
    dead_letters: DeadLetterRepo


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


def delivery_policy(cfg: StoreSettings) -> worker.DeliveryPolicy:
    return worker.DeliveryPolicy(max_deliver=cfg.max_deliver, backoff_base_s=cfg.backoff_base_s,
                                 backoff_cap_s=cfg.backoff_cap_s, ack_wait_s=cfg.ack_wait_s)


def register(broker: NatsBroker, get_deps: Callable[[], Deps], cfg: StoreSettings,
             inbox: bytes = b"_INBOX.") -> worker.EventWorker:
    """Store's consumers on ``broker``; the returned ``EventWorker`` ensures them.
    ``inbox``: the pull subscriptions' reply prefix (``bus.subscriber_inbox``)."""
    consumers = worker.EventWorker(
        broker, service=SERVICE, policy=delivery_policy(cfg),
        dead_letters=lambda: get_deps().dead_letters, inbox_prefix=inbox)

    def subscribe(filter_subject: str, durable: str, *, batch: bool = False,
                  batch_size: int = cfg.batch_size,
                  fetch_timeout_s: float = cfg.fetch_timeout_s) -> worker.Registration:
        # A batch consumer waits ``fetch_timeout_s`` for its first event (one pull request
        # per that while idle), then at most its batch wait for the batch to fill.
        return consumers.subscriber(filter_subject, durable=durable, batch=batch,
                                    batch_size=batch_size, fetch_timeout_s=fetch_timeout_s,
                                    idle_wait_s=cfg.fetch_timeout_s if batch else None)

    # Batches: one insert per fetch for the messages and one for their audit rows (a round
    # trip per event cost FerretDB more than the rest of the record). A partial batch waits
    # at most ``delivery_batch_wait_s`` (a lone message is not held back for the full fetch).
    @subscribe(subjects.any_tenant(subjects.MESSAGE_RECEIVED), subjects.STORE_RECEIVED,
               batch=True, fetch_timeout_s=cfg.delivery_batch_wait_s)
    async def on_message_received(events: list[MessageReceived]) -> None:
        d = get_deps()
        await service.record_messages(events=events, messages=d.messages, blobs=d.blobs,
                                      publisher=d.publisher, audit=d.audit)

    # A partial batch is handled after ``delivery_batch_wait_s``, so the wait bounds the added
    # latency; under load the batch fills first.
    @subscribe(subjects.any_tenant("notification.>"), subjects.STORE_DELIVERY,
               batch=True, batch_size=cfg.delivery_batch_size,
               fetch_timeout_s=cfg.delivery_batch_wait_s)
    async def on_notification_events(events: list[DeliveryEvent]) -> None:
        d = get_deps()
        await service.record_deliveries(events=events, deliveries=d.deliveries, audit=d.audit,
                                        undeliverable=d.undeliverable)

    # Store owns dead_letters: the other workers hand theirs over (worker.PublishedDeadLetters).
    @subscribe(subjects.DEAD_LETTER_RECORDED, subjects.STORE_DEAD_LETTERS)
    async def on_dead_letter(letter: worker.DeadLetterRecorded) -> None:
        await get_deps().dead_letters.keep(letter)

    @subscribe(subjects.any_tenant("audit.>"), subjects.STORE_AUDIT, batch=True,
               fetch_timeout_s=cfg.delivery_batch_wait_s)
    async def on_audit_events(events: list[AuditEvent]) -> None:
        d = get_deps()
        await service.record_audits(events=events, audit=d.audit, messages=d.messages)

    # One event per fetch: a key rotation can run for minutes, and events fetched behind it
    # would sit out their ack_wait and be redelivered.
    @subscribe(subjects.any_tenant("control.>"), subjects.STORE_CONTROL, batch_size=1)
    async def on_control_event(
            event: MessageRecalled | MessageExpiryChanged | KeyRotationRequested
            | UndeliverableCleared,
            msg: NatsMessage) -> None:
        d = get_deps()
        if isinstance(event, UndeliverableCleared):
            await control.clear_undeliverable(event=event, undeliverable=d.undeliverable)
        elif isinstance(event, MessageRecalled):
            await control.recall_message(event=event, messages=d.messages, claims=d.claims,
                                         blobs=d.blobs, audit=d.audit, owner=d.owner,
                                         lease_s=cfg.purge_lease_s)
        elif isinstance(event, MessageExpiryChanged):
            meta = msg.raw_message.metadata
            await control.change_expiry(event=event, messages=d.messages, claims=d.claims,
                                        audit=d.audit, owner=d.owner,
                                        lease_s=cfg.purge_lease_s,
                                        attempt=meta.num_delivered or 1,
                                        missing_retries=cfg.control_missing_retries)
        else:
            async with kept_alive(msg, cfg.ack_wait_s / 3):
                await rewrap.rotate_keys(
                    event=event, messages=d.messages, claims=d.claims, rotations=d.rotations,
                    audit=d.audit, keyring=d.keyring, owner=d.owner,
                    lease_s=cfg.purge_lease_s, page_size=cfg.rewrap_page_size,
                    progress_every=cfg.rewrap_progress_every, pause_s=cfg.rewrap_pause_s)

    return consumers
