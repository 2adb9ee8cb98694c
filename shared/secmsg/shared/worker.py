"""How every worker handles one JetStream message: decode, run, then ack, nak or terminate.

    decoded and handled          -> ack (after the handler's effects are durable and its next
                                    event is published)
    PoisonEvent / PermanentError -> record in ``dead_letters``, terminate (never redelivered,
                                    the stream keeps flowing)
    TransientError or a bug      -> nak with exponential back-off (JetStream redelivers)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream.nats import NatsMessage
from nats.aio.msg import Msg
from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import logs, mongo
from secmsg.shared.errors import PermanentError, TransientError
from secmsg.shared.events import decode_event

log = logging.getLogger(__name__)
E = TypeVar("E")

EVENTS = Counter("secmsg_events_total", "Events consumed, by outcome",
                 ["service", "consumer", "outcome"])


def backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait before delivery ``attempt + 1``: 1, 2, 4, ... capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


async def record_dead_letter(db: AsyncDatabase[Any], *, service: str, subject: str,
                             reason: str, body: bytes) -> None:
    try:
        await db[mongo.DEAD_LETTERS].insert_one({
            "service": service, "subject": subject, "reason": reason,
            "size": len(body), "head": body[:512].decode("utf-8", "replace"),
            "at": datetime.now(UTC),
        })
    except Exception:  # the terminate must still happen; the log line is the record then
        log.exception("could not record dead letter", extra={"subject": subject})


async def process(msg: NatsMessage, expected: type[E] | tuple[type, ...],
                  handler: Callable[[E], Awaitable[None]], *, db: AsyncDatabase[Any],
                  service: str, consumer: str,
                  backoff_fn: Callable[[int], float] = backoff) -> None:
    subject = msg.raw_message.subject
    attempt = msg.raw_message.metadata.num_delivered or 1
    try:
        event = decode_event(msg.body, expected)  # type: ignore[arg-type]
    except PermanentError as exc:
        log.error("poison event terminated: %s", exc.detail, extra={"subject": subject})
        await record_dead_letter(db, service=service, subject=subject, reason=exc.detail,
                                 body=msg.body)
        await msg.reject()
        EVENTS.labels(service, consumer, "terminated").inc()
        return
    token_c = logs.correlation_id.set(getattr(event, "message_id", None))
    token_t = logs.tenant_id.set(getattr(event, "tenant_id", None))
    try:
        await handler(event)
    except PermanentError as exc:
        log.error("event failed permanently: %s", exc.detail, extra={"subject": subject})
        await record_dead_letter(db, service=service, subject=subject, reason=exc.detail,
                                 body=msg.body)
        await msg.reject()
        EVENTS.labels(service, consumer, "terminated").inc()
    except TransientError as exc:
        delay = backoff_fn(attempt)
        log.warning("transient failure, retry in %.0fs: %s", delay, exc.detail,
                    extra={"subject": subject, "attempt": attempt})
        await msg.nack(delay=delay)
        EVENTS.labels(service, consumer, "naked").inc()
    except Exception:
        delay = backoff_fn(attempt)
        log.exception("unexpected error, retry in %.0fs", delay,
                      extra={"subject": subject, "attempt": attempt})
        await msg.nack(delay=delay)
        EVENTS.labels(service, consumer, "naked").inc()
    else:
        await msg.ack()
        EVENTS.labels(service, consumer, "acked").inc()
    finally:
        logs.correlation_id.reset(token_c)
        logs.tenant_id.reset(token_t)


async def process_batch(msgs: Sequence[Msg], expected: type[E] | tuple[type, ...],
                        handler: Callable[[list[E]], Awaitable[None]], *,
                        db: AsyncDatabase[Any], service: str, consumer: str,
                        backoff_fn: Callable[[int], float] = backoff) -> None:
    """``process`` for a batch of raw JetStream messages with one handler call for all.

    Each message is decoded alone: a poison one is dead-lettered and terminated on its own,
    as ``process`` does. The handler gets the good events in stream order and must make them
    all durable or raise; only then is each acked. Any failure naks every good message with
    its own back-off (nothing was acked yet), so the whole batch comes again -- the handler
    must be idempotent. A handler cannot pin a ``PermanentError`` on one event, so that too
    naks the batch (and is logged as an error): handle per-event permanent failures inside.
    """
    good: list[Msg] = []
    events: list[E] = []
    for m in msgs:
        try:
            events.append(decode_event(m.data, expected))  # type: ignore[arg-type]
        except PermanentError as exc:
            log.error("poison event terminated: %s", exc.detail, extra={"subject": m.subject})
            await record_dead_letter(db, service=service, subject=m.subject,
                                     reason=exc.detail, body=m.data)
            await m.term()
            EVENTS.labels(service, consumer, "terminated").inc()
        else:
            good.append(m)
    if not good:
        return
    try:
        await handler(events)
    except Exception as exc:
        for m in good:
            attempt = m.metadata.num_delivered or 1
            await m.nak(delay=backoff_fn(attempt))
        EVENTS.labels(service, consumer, "naked").inc(len(good))
        first = good[0].metadata.num_delivered or 1
        if isinstance(exc, TransientError):
            log.warning("transient failure, batch of %d to retry in %.0fs: %s", len(good),
                        backoff_fn(first), exc.detail, extra={"attempt": first})
        else:
            log.error("batch of %d failed, retry in %.0fs", len(good), backoff_fn(first),
                      exc_info=True, extra={"attempt": first})
        return
    for m in good:
        await m.ack()
    EVENTS.labels(service, consumer, "acked").inc(len(good))
