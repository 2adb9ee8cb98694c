"""Event bus plumbing over NATS JetStream: connection, the stream, publishing with dedupe.

Publishing always waits for the JetStream acknowledgement (the event is on disk in the stream)
and sets ``Nats-Msg-Id`` to a deterministic id, so a retried publish inside the stream's
duplicate window is dropped by the server instead of being delivered twice.
"""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from secmsg.shared import subjects, telemetry
from secmsg.shared.errors import DependencyUnavailable, PublishUnconfirmed

log = logging.getLogger(__name__)

STREAM_CONFIG = StreamConfig(
    name=subjects.STREAM,
    subjects=subjects.STREAM_SUBJECTS,
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    discard=DiscardPolicy.OLD,
    max_age=subjects.MAX_AGE_S,
    duplicate_window=subjects.DUPLICATE_WINDOW_S,
)


async def connect(url: str, name: str, **kwargs: object) -> NATS:
    try:
        return await nats.connect(url, name=name, max_reconnect_attempts=-1,
                                  reconnect_time_wait=1, connect_timeout=3, **kwargs)
    except (NatsError, OSError) as exc:
        raise DependencyUnavailable(f"NATS unavailable at start-up ({type(exc).__name__})") from exc


async def ensure_stream(nc: NATS) -> None:
    """Create the SECMSG stream, or bring its configuration up to date. Idempotent."""
    js = nc.jetstream()
    try:
        await js.stream_info(subjects.STREAM)
        await js.update_stream(STREAM_CONFIG)
    except NotFoundError:
        await js.add_stream(STREAM_CONFIG)


class EventPublisher:
    def __init__(self, nc: NATS, timeout: float = 5.0):
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout

    async def publish(self, event: BaseModel, msg_id: str) -> bool:
        """Publish durably; returns False when the server dropped it as a duplicate.

        Raises ``DependencyUnavailable`` when nothing was sent (not connected), and
        ``PublishUnconfirmed`` when the request went out but no acknowledgement came back.
        """
        subj = subjects.subject_for(event)
        if not self._nc.is_connected:
            raise DependencyUnavailable(f"event bus unavailable, could not publish {subj} "
                                        "(NATS is not connected)")
        kind = str(getattr(event, "kind", type(event).__name__))
        headers = {"Nats-Msg-Id": msg_id}
        try:
            with telemetry.publish_span(subj, headers):
                ack = await self._js.publish(subj, event.model_dump_json().encode(),
                                             timeout=self._timeout, stream=subjects.STREAM,
                                             headers=headers)
        except (NatsError, OSError, TimeoutError) as exc:
            telemetry.EVENTS_PUBLISHED.labels(kind, "failed").inc()
            raise PublishUnconfirmed(
                f"event bus did not confirm {subj} ({type(exc).__name__})"
            ) from exc
        telemetry.EVENTS_PUBLISHED.labels(kind, "duplicate" if ack.duplicate else "published"
                                          ).inc()
        return not ack.duplicate

    async def ping(self) -> None:
        if not self._nc.is_connected:
            raise DependencyUnavailable("NATS is not connected")
        try:
            await self._js.stream_info(subjects.STREAM)
        except (NatsError, OSError, TimeoutError) as exc:
            raise DependencyUnavailable(f"JetStream unavailable ({type(exc).__name__})") from exc
