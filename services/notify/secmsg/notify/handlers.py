"""The one event notify consumes: ``message.stored`` → one notification per recipient."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from faststream.nats.message import NatsMessage

from secmsg.notify import service
from secmsg.shared import subjects, worker
from secmsg.shared.events import MessageStored

if TYPE_CHECKING:
    from secmsg.notify.app import NotifyWorker


async def raw_message(msg: NatsMessage) -> NatsMessage:
    """The subscriber's decoder: the handler gets the message itself, not its parsed body.

    With the broker's ``apply_types=False`` FastStream calls the handler with whatever the
    decoder returns; ``worker.process`` decodes and validates the body once, itself.
    """
    return msg


def make_on_message_stored(rt: NotifyWorker) -> Callable[..., Awaitable[None]]:
    async def on_message_stored(msg: NatsMessage) -> None:
        # worker.process picks the nak delay; a RetryLater knows better (the earliest
        # recipient retry or the end of another worker's lease), so hand its delay over.
        retry_in: list[float] = []

        async def handle(event: MessageStored) -> None:
            try:
                await service.notify_recipients(
                    event=event, deliveries=rt.deliveries, mailer=rt.mailer,
                    tenants=rt.tenants, publisher=rt.publisher,
                    target=await rt.relay.platform_target(),
                    policy=rt.policy, platform_from=rt.common.smtp_from,
                    public_url=rt.common.retrieve_public_url, heartbeat=msg.in_progress,
                    signer=rt.signer, platform_dkim=rt.platform_dkim,
                    undeliverable=rt.undeliverable, bounce_base=rt.bounce_base,
                    recipient_hint=rt.recipient_hint, renderer=rt.renderer)
            except service.RetryLater as exc:
                retry_in.append(exc.delay)
                raise

        def delay_for(attempt: int) -> float:
            if retry_in:
                return retry_in[0]
            # Infrastructure trouble (MongoDB, NATS): start retrying sooner than for SMTP.
            return worker.backoff(attempt, base=min(1.0, rt.policy.retry_base_s),
                                  cap=rt.policy.retry_max_s)

        await worker.process(msg, MessageStored, handle, db=rt.db, service="notify",
                             consumer=subjects.NOTIFY_STORED, backoff_fn=delay_for)

    return on_message_stored
