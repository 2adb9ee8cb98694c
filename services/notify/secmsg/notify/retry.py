"""Retries off the hot path: the ``NOTIFY_RETRY`` stream and its scheduled redelivery.

The hot consumer (``notify-stored`` on ``SECMSG``) never holds a notification that must wait:
a recipient deferred by its SMTP server (4xx, refused, hung -- RFC 5321 §4.5.4: retry with
back-off for days), a target that is down or saturated, a tenant whose template renders are
queued up -- all of these end the hot delivery with an ack after a :class:`NotifyRetry` is
published to ``notify.retry.<tenant>`` with the time it is due. Before, such an event was
``nak(delay)``'ed and sat in the hot consumer's ``max_ack_pending`` window: one tenant whose
server accepts TCP and never answers filled the window and every tenant's notifications
stopped.

``NOTIFY_RETRY`` is a work-queue stream (an acked retry is deleted) read by the durable
``notify-retry`` consumer with its own handlers and its own, larger ack-pending window. A
retry delivered before it is due is ``nak``'ed with the remaining delay (JetStream's own
timer, no polling); when due, the event is worked through again -- recipients already final
are skipped by their claims -- and what is still waiting is published as the next round.
``Nats-Msg-Id`` ``<tenant>:<message>:retry:<round>`` drops the copy a redelivered round would
publish again. KEDA scales notify on the hot consumer's backlog only.

This work item is notify's own (only notify publishes and reads it), so its model lives
here, not among the events between services in ``shared/events.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from pydantic import BaseModel, ConfigDict

from secmsg.shared.errors import DependencyUnavailable, PublishUnconfirmed
from secmsg.shared.events import MessageStored

STREAM = "NOTIFY_RETRY"
PREFIX = "notify.retry"
CONSUMER = "notify-retry"
DUPLICATE_WINDOW_S = 2 * 3600


def subject(tenant_id: str) -> str:
    return f"{PREFIX}.{tenant_id}"


def any_tenant() -> str:
    return f"{PREFIX}.*"


class NotifyRetry(BaseModel):
    """One ``message.stored`` event to work through again once ``not_before`` has passed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["notify.retry"] = "notify.retry"
    version: Literal[1] = 1
    event: MessageStored
    round: int
    not_before: datetime

    @property
    def tenant_id(self) -> str:
        return self.event.tenant_id

    def msg_id(self) -> str:
        return f"{self.event.tenant_id}:{self.event.message_id}:retry:{self.round}"


def stream_config(*, max_age_s: float) -> StreamConfig:
    """Created and kept up to date by ``bus.ensure_stream`` (replicas only ever raised)."""
    return StreamConfig(
        name=STREAM, subjects=[f"{PREFIX}.>"], retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.OLD, storage=StorageType.FILE, max_age=max_age_s,
        duplicate_window=min(DUPLICATE_WINDOW_S, max_age_s),
        description="secmsg notify: notifications waiting for their next try")


class RetryPublisher:
    """Publishes :class:`NotifyRetry` items durably (JetStream ack) with their dedupe id."""

    def __init__(self, nc: NATS, timeout: float = 5.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout

    async def publish(self, item: NotifyRetry) -> None:
        if not self._nc.is_connected:
            raise DependencyUnavailable("retry stream unavailable (NATS is not connected)")
        try:
            await self._js.publish(subject(item.tenant_id), item.model_dump_json().encode(),
                                   timeout=self._timeout, stream=STREAM,
                                   headers={"Nats-Msg-Id": item.msg_id()})
        except (NatsError, OSError, TimeoutError) as exc:
            raise PublishUnconfirmed(f"retry stream did not confirm ({type(exc).__name__})") \
                from exc
