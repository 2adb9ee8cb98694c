"""Audit events to NATS JetStream through the shared publisher, with a deterministic id."""

from __future__ import annotations

from secmsg.shared.bus import EventPublisher
from secmsg.shared.events import (
    AttachmentDownloaded,
    AuditRecorded,
    MessageOpened,
    event_msg_id,
)


class NatsAuditPublisher:
    def __init__(self, publisher: EventPublisher):
        self._publisher = publisher

    async def publish(self, event: MessageOpened | AttachmentDownloaded | AuditRecorded
                      ) -> None:
        # The port's whole contract (sign-ins, tokens, revocations record AuditRecorded too).
        # event_id is unique per access, so a retried publish of the same access dedupes.
        await self._publisher.publish(event, event_msg_id(event, event.event_id))
