# Over 400 lines: one consumer contract (decode, ack, dead letter) + its explanation
"""How every worker consumes JetStream events: FastStream subscribers with one event contract.

A service builds its ``NatsBroker`` (``apply_types`` on, the default), wraps it in an
``EventWorker`` and registers typed handlers::

    events = worker.EventWorker(broker, service="notify", policy=policy,
                                dead_letters=lambda: PublishedDeadLetters(nc))

    @events.subscriber(subjects.any_tenant(subjects.MESSAGE_RECEIVED),
                       durable=subjects.STORE_RECEIVED, batch_size=16, fetch_timeout_s=5)
    async def on_message_received(event: MessageReceived) -> None:
        await service.record_message(event=event, ...)

    await events.ensure_consumers(broker.connection)  # at start-up, after the stream exists

The body is decoded once by the subscriber's decoder into the shared pydantic event model
(``events.decode_event``: unknown ``kind`` or ``version``, bad JSON -> ``PoisonEvent``) and
FastStream hands the handler the typed event (``list[...]`` for a batch subscriber). A handler
that needs the message itself (heartbeats, the delivery count) asks for it by type:
``msg: faststream.nats.annotations.NatsMessage``.

The handler's outcome decides the acknowledgement (``EventOutcomes``, a broker middleware,
turns exceptions into FastStream's ``NackMessage`` / ``RejectMessage``; the subscriber's
``AckPolicy.NACK_ON_ERROR`` acks on return):

    returns                          -> ack (its effects are durable, its next event published)
    PoisonEvent (undecodable, or a   -> dead letter, terminate: never redelivered, the stream
      kind this handler does not take)  keeps flowing
    PermanentError                   -> dead letter, terminate
    TransientError, or any other     -> nak with exponential back-off (``DeliveryPolicy``);
      exception (a bug)                 on delivery ``max_deliver`` -> dead letter, terminate
    delivered more than max_deliver  -> dead letter without running the handler (the earlier
      times (crash, ack_wait expired)   attempts never finished: a crash loop)
    raises NackMessage/RejectMessage -> as the handler says (it took the decision itself)

A dead letter (``DeadLetter``, collection ``dead_letters``) keeps the reason, subject, stream
sequence, delivery count and the full payload, so an operator can replay it (store's
``python -m secmsg.store.deadletters``, docs/operations.md "Dead letters"). Store owns
``dead_letters``: it records its own letters directly, every other worker hands them to it
(``PublishedDeadLetters`` -> ``DeadLetterRecorded``). It is kept (recorded, or
JetStream-acknowledged) before the terminate; when it cannot be (MongoDB or NATS down) the
event is nak'ed instead and
comes back, so nothing is terminated without a record. The JetStream consumer's own
``max_deliver`` is ``policy.max_deliver + RECORD_RETRIES``: the server stops redelivering only
after the worker had that many more chances to record the dead letter.

Batch subscribers (``batch=True``) get ``list[Event]``: each message is decoded alone (a
poison one is dead-lettered and terminated on its own), the handler gets the good ones in
stream order and must make them all durable or raise. A ``TransientError`` naks the batch; any
other failure retries each event alone once, so one bad event cannot hold back the others:
the good ones are acked, the bad one follows the rules above.

Exactly-once effects stay the handlers' business, as before: ``Nats-Msg-Id`` dedupe on
publish (``BrokerPublisher``) and idempotent writes / claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
import types
import typing
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar, get_args

from faststream import AckPolicy
from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from secmsg.shared import logs, subjects, telemetry
from secmsg.shared.errors import (
    DependencyUnavailable,
    PermanentError,
    PoisonEvent,
    PublishUnconfirmed,
    TransientError,
)
from secmsg.shared.events import AnyEvent, decode_event

log = logging.getLogger(__name__)
E = TypeVar("E")

EVENTS = Counter("secmsg_events_total", "Events consumed, by outcome",
                 ["service", "consumer", "outcome"])
DEAD_LETTERED = Counter(
    "secmsg_dead_lettered_total",
    "Events written to dead_letters, by why (poison: undecodable or unexpected kind; "
    "permanent: PermanentError; exhausted: max_deliver reached)",
    ["service", "consumer", "why"])

ALL_EVENTS: tuple[type[BaseModel], ...] = get_args(get_args(AnyEvent)[0])
# Extra deliveries the server allows past ``max_deliver`` for writing the dead letter.
RECORD_RETRIES = 50


def backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait before delivery ``attempt + 1``: 1, 2, 4, ... capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class DeliveryPolicy:
    """Redelivery of one consumer: back-off between deliveries and where it ends.

    With the defaults an event that keeps failing is tried 10 times over about 8.5 minutes
    (1, 2, 4 ... 256 s apart) and then dead-lettered.
    """

    max_deliver: int = 10
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    ack_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")

    def delay(self, attempt: int) -> float:
        return backoff(attempt, base=self.backoff_base_s, cap=self.backoff_cap_s)


# -- dead letters ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """One event given up on, with what an operator needs to understand and replay it.

    ``id`` is ``<stream>:<stream sequence>``, so recording the same delivery twice (a
    redelivery after a lost terminate) keeps one document.
    """

    service: str
    consumer: str
    subject: str
    reason: str
    payload: bytes
    deliveries: int = 1
    stream: str = subjects.STREAM
    stream_seq: int | None = None
    msg_id: str | None = None  # the original Nats-Msg-Id
    error: str | None = None  # the exception class, for exhausted / permanent failures
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> str:
        if self.stream_seq is None:
            return f"{self.stream}:x{uuid.uuid4().hex}"
        return f"{self.stream}:{self.stream_seq}"

    def document(self) -> dict[str, Any]:
        """The ``dead_letters`` document (the same whether store keeps its own letter or one
        another worker sent it)."""
        return DeadLetterRecorded.of(self).document()


class DeadLetterSink(Protocol):
    async def record(self, letter: DeadLetter) -> None:
        """Keep ``letter``; raise ``DependencyUnavailable`` when it could not be kept."""
        ...


class DeadLetterRecorded(BaseModel):
    """A worker other than store -> store: keep this dead letter (store owns
    ``dead_letters``; it records its own directly). On ``subjects.DEAD_LETTER_RECORDED``
    (``secmsg._ops.dead_letter.recorded``: not a tenant's subject, no tenant consumer sees it),
    ``Nats-Msg-Id`` = the letter's id, so recording one delivery twice keeps one."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64",
                              val_json_bytes="base64")

    version: Literal[1] = 1
    kind: Literal["dead_letter.recorded"] = "dead_letter.recorded"
    id: str
    service: str
    consumer: str
    subject: str
    reason: str
    payload: bytes
    deliveries: int = 1
    stream: str = subjects.STREAM
    stream_seq: int | None = None
    msg_id: str | None = None
    error: str | None = None
    at: datetime

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterRecorded:
        return cls(id=letter.id, **dataclasses.asdict(letter))

    def document(self) -> dict[str, Any]:
        """The ``dead_letters`` document."""
        return {"_id": self.id, "service": self.service, "consumer": self.consumer,
                "subject": self.subject, "stream": self.stream, "stream_seq": self.stream_seq,
                "msg_id": self.msg_id, "reason": self.reason, "error": self.error,
                "deliveries": self.deliveries, "payload": self.payload,
                "size": len(self.payload), "state": "open", "at": self.at}


class PublishedDeadLetters:
    """The dead-letter sink of a worker other than store: the letter goes to store as
    ``DeadLetterRecorded`` (JetStream-acknowledged before the event is terminated)."""

    def __init__(self, nc: NATS, *, timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout_s)
        self._timeout_s = timeout_s

    async def record(self, letter: DeadLetter) -> None:
        wire = DeadLetterRecorded.of(letter)
        if not self._nc.is_connected:
            raise DependencyUnavailable("event bus unavailable: dead letter not recorded")
        try:
            await self._js.publish(subjects.DEAD_LETTER_RECORDED, wire.model_dump_json().encode(),
                                   timeout=self._timeout_s, stream=subjects.STREAM,
                                   headers={"Nats-Msg-Id": wire.id})
        except (NatsError, OSError, TimeoutError) as exc:
            raise DependencyUnavailable(
                f"dead letter not recorded ({type(exc).__name__})") from exc


def letter_from(raw: Msg, *, service: str, consumer: str, reason: str,
                error: str | None = None) -> DeadLetter:
    meta = _metadata(raw)
    headers = raw.headers or {}
    return DeadLetter(
        service=service, consumer=(meta.consumer if meta else None) or consumer,
        subject=raw.subject, reason=reason, payload=raw.data or b"",
        deliveries=(meta.num_delivered if meta else None) or 1,
        stream=(meta.stream if meta else None) or subjects.STREAM,
        stream_seq=meta.sequence.stream if meta and meta.sequence else None,
        msg_id=headers.get("Nats-Msg-Id"), error=error)


def _metadata(raw: Any) -> Any:
    """JetStream metadata of a raw message, None for a message that has none (tests)."""
    try:
        return raw.metadata
    except Exception:  # nats-py raises NotJSMsgError; TestNatsBroker's messages have none
        return None


def _attempt(raw: Any) -> int:
    meta = _metadata(raw)
    return (meta.num_delivered if meta else None) or 1


# -- decoding ----------------------------------------------------------------------------


Decode = Callable[[bytes], Any]


def shared_events(raw: bytes) -> Any:
    """Bytes -> one of the shared event models (``events.decode_event``) or ``PoisonEvent``."""
    return decode_event(raw, ALL_EVENTS)  # type: ignore[arg-type]


def model_decoder(accepts: tuple[type, ...]) -> Decode:
    """How a handler's body is decoded: the shared events' contract when it takes shared
    events (unknown kind/version -> poison), else a pydantic adapter for what it takes (a
    service's own stream, e.g. notify's retries)."""
    if not accepts or all(t in ALL_EVENTS for t in accepts):
        return shared_events
    # A type expression built at run time: a static checker can only see Any.
    target: Any = accepts[0] if len(accepts) == 1 else typing.Union[accepts]  # noqa: UP007
    adapter: TypeAdapter[Any] = TypeAdapter(target)

    def decode(raw: bytes) -> Any:
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise PoisonEvent(f"undecodable ({where}: {first.get('msg')})") from None

    return decode


def one_decoder(decode: Decode) -> Callable[[StreamMessage[Any]], Awaitable[Any]]:
    async def decoder(msg: StreamMessage[Any]) -> Any:
        return decode(msg.body)
    return decoder




class DecodedBatch(list[Any]):
    """The good events of a batch (stream order); ``poison`` holds the rest with reasons."""

    poison: list[tuple[Msg, str]]
    good: list[Msg]


def batch_decoder(decode: Decode) -> Callable[[StreamMessage[Any]], Awaitable[DecodedBatch]]:
    async def decoder(msg: StreamMessage[Any]) -> DecodedBatch:
        """Each message decoded alone, poison ones set aside."""
        out = DecodedBatch()
        out.poison, out.good = [], []
        for raw in msg.raw_message:
            if raw._ackd:  # already settled (terminated as poison on an earlier pass)
                continue
            try:
                out.append(decode(raw.data))
            except PoisonEvent as exc:
                out.poison.append((raw, exc.detail))
            else:
                out.good.append(raw)
        return out
    return decoder



# -- outcomes ----------------------------------------------------------------------------


class EventOutcomes:
    """Broker middleware factory: turns a handler's outcome into ack / nak / dead letter."""

    def __init__(self, *, service: str, dead_letters: Callable[[], DeadLetterSink],
                 policy: DeliveryPolicy) -> None:
        self.service = service
        self.dead_letters = dead_letters
        self.policy = policy
        # per subscriber: its policy and the event classes its handler takes
        self.subscribers: dict[int, tuple[DeliveryPolicy, tuple[type, ...]]] = {}

    def settings_for(self, context: Any) -> tuple[DeliveryPolicy, tuple[type, ...]]:
        try:
            sub = context.get_local("handler_")
        except Exception:
            sub = None
        return self.subscribers.get(id(sub), (self.policy, ()))

    def __call__(self, msg: Any, /, *, context: Any) -> _Outcome:
        return _Outcome(msg, context=context, outer=self)


class _Outcome(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, outer: EventOutcomes) -> None:
        super().__init__(msg, context=context)
        self.outer = outer

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]],
                            msg: StreamMessage[Any]) -> Any:
        if isinstance(msg, NatsBatchMessage):
            return await self._batch(call_next, msg)
        return await self._one(call_next, msg)

    # single messages

    async def _one(self, call_next: Callable[[Any], Awaitable[Any]],
                   msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        meta = _metadata(raw)
        consumer = (meta.consumer if meta else None) or "?"
        policy, accepts = self.outer.settings_for(self.context)
        attempt = _attempt(raw)
        try:
            event = await msg.decode()
            if accepts and not isinstance(event, accepts):
                raise PoisonEvent(f"unexpected event kind {getattr(event, 'kind', '?')!r} "
                                  "for this consumer")
        except PoisonEvent as exc:
            log.error("poison event: %s", exc.detail, extra={"subject": raw.subject})
            await self._give_up(raw, consumer, exc.detail, "poison", attempt, policy)
        token_c = logs.correlation_id.set(getattr(event, "message_id", None))
        token_t = logs.tenant_id.set(getattr(event, "tenant_id", None))
        try:
            if attempt > policy.max_deliver:
                await self._give_up(
                    raw, consumer, f"delivered {attempt - 1} times without finishing "
                    "(crash or ack_wait expired)", "exhausted", attempt, policy)
            try:
                result = await call_next(msg)
            except HandlerException:
                EVENTS.labels(self.outer.service, consumer, "handler_decided").inc()
                raise
            except PermanentError as exc:
                log.error("event failed permanently: %s", exc.detail,
                          extra={"subject": raw.subject})
                await self._give_up(raw, consumer, exc.detail, "permanent", attempt, policy,
                                    error=type(exc).__name__)
            except Exception as exc:
                await self._retry_or_give_up(raw, consumer, exc, attempt, policy)
            EVENTS.labels(self.outer.service, consumer, "acked").inc()
            return result
        finally:
            logs.correlation_id.reset(token_c)
            logs.tenant_id.reset(token_t)

    async def _retry_or_give_up(self, raw: Msg, consumer: str, exc: Exception, attempt: int,
                                policy: DeliveryPolicy) -> None:
        detail = exc.detail if isinstance(exc, TransientError) else f"{exc}"
        if attempt >= policy.max_deliver:
            log.error("failed on delivery %d of %d, dead-lettered: %s: %s", attempt,
                      policy.max_deliver, type(exc).__name__, detail,
                      exc_info=not isinstance(exc, TransientError),
                      extra={"subject": raw.subject, "attempt": attempt})
            await self._give_up(
                raw, consumer, f"{type(exc).__name__}: {detail} (gave up after {attempt} "
                "deliveries)", "exhausted", attempt, policy, error=type(exc).__name__)
        delay = policy.delay(attempt)
        if isinstance(exc, TransientError):
            log.warning("transient failure, retry in %.1fs: %s", delay, detail,
                        extra={"subject": raw.subject, "attempt": attempt})
        else:
            log.error("unexpected error, retry in %.1fs", delay, exc_info=exc,
                      extra={"subject": raw.subject, "attempt": attempt})
        EVENTS.labels(self.outer.service, consumer, "naked").inc()
        raise NackMessage(delay=delay) from exc

    async def _give_up(self, raw: Msg, consumer: str, reason: str, why: str, attempt: int,
                       policy: DeliveryPolicy, *, error: str | None = None) -> None:
        """Record the dead letter, then terminate (``RejectMessage``); nak if unrecorded."""
        await self._record(raw, consumer, reason, why, attempt, policy, error=error)
        raise RejectMessage

    async def _record(self, raw: Msg, consumer: str, reason: str, why: str, attempt: int,
                      policy: DeliveryPolicy, *, error: str | None = None) -> None:
        letter = letter_from(raw, service=self.outer.service, consumer=consumer,
                             reason=reason, error=error)
        try:
            await self.outer.dead_letters().record(letter)
        except Exception as exc:
            # Never terminate without a record: the event comes back and we try again.
            log.error("could not record dead letter %s, retrying later: %s", letter.id, exc,
                      extra={"subject": raw.subject, "attempt": attempt})
            EVENTS.labels(self.outer.service, consumer, "naked").inc()
            raise NackMessage(delay=policy.backoff_cap_s) from exc
        DEAD_LETTERED.labels(self.outer.service, consumer, why).inc()
        EVENTS.labels(self.outer.service, consumer, "terminated").inc()

    # batches

    async def _batch(self, call_next: Callable[[Any], Awaitable[Any]],
                     msg: StreamMessage[Any]) -> Any:
        raws: list[Msg] = msg.raw_message
        meta = _metadata(raws[0]) if raws else None
        consumer = (meta.consumer if meta else None) or "?"
        policy, accepts = self.outer.settings_for(self.context)
        decoded = await msg.decode()  # cached: the handler gets the same list
        if not isinstance(decoded, DecodedBatch):
            raise TypeError("a batch subscriber must decode with the batch decoder")
        if accepts and not all(isinstance(e, accepts) for e in decoded):
            keep = [(e, r) for e, r in zip(decoded, decoded.good, strict=True)
                    if isinstance(e, accepts)]
            decoded.poison += [(r, f"unexpected event kind {getattr(e, 'kind', '?')!r} for "
                                   "this consumer")
                               for e, r in zip(decoded, decoded.good, strict=True)
                               if not isinstance(e, accepts)]
            decoded[:] = [e for e, _ in keep]
            decoded.good = [r for _, r in keep]
        for raw, reason in decoded.poison:
            log.error("poison event: %s", reason, extra={"subject": raw.subject})
            await self._record(raw, consumer, reason, "poison", _attempt(raw), policy)
            await raw.term()
        if not decoded:
            return None
        try:
            result = await call_next(msg)
        except HandlerException:
            raise
        except TransientError as exc:
            first = _attempt(decoded.good[0])
            delay = policy.delay(first)
            log.warning("transient failure, batch of %d to retry in %.1fs: %s",
                        len(decoded), delay, exc.detail, extra={"attempt": first})
            await self._nak_or_give_up(decoded.good, consumer, exc, policy)
            return None
        except Exception as exc:
            if len(decoded) == 1:
                await self._nak_or_give_up(decoded.good, consumer, exc, policy)
                return None
            log.exception("batch of %d failed; handling its events one at a time",
                          len(decoded))
            await self._one_by_one(call_next, msg, decoded, consumer, policy)
            return None
        EVENTS.labels(self.outer.service, consumer, "acked").inc(len(decoded))
        return result

    async def _one_by_one(self, call_next: Callable[[Any], Awaitable[Any]],
                          msg: StreamMessage[Any], decoded: DecodedBatch, consumer: str,
                          policy: DeliveryPolicy) -> None:
        for raw in decoded.good:
            single = copy.copy(msg)  # a copy decodes its own body (fresh cache)
            single.raw_message = [raw]
            single.body = [raw.data]
            try:
                await call_next(single)
            except Exception as exc:
                await self._nak_or_give_up([raw], consumer, exc, policy)
            else:
                await raw.ack()
                EVENTS.labels(self.outer.service, consumer, "acked").inc()

    async def _nak_or_give_up(self, raws: Sequence[Msg], consumer: str, exc: BaseException,
                              policy: DeliveryPolicy) -> None:
        for raw in raws:
            attempt = _attempt(raw)
            if isinstance(exc, PermanentError) or attempt >= policy.max_deliver:
                name = type(exc).__name__
                detail = exc.detail if isinstance(exc, PermanentError | TransientError) \
                    else str(exc)
                why = "permanent" if isinstance(exc, PermanentError) else "exhausted"
                reason = (f"{name}: {detail}" if why == "permanent" else
                          f"{name}: {detail} (gave up after {attempt} deliveries)")
                try:
                    await self._record(raw, consumer, reason, why, attempt, policy, error=name)
                except NackMessage as nack:
                    await raw.nak(delay=nack.extra_options.get("delay"))
                else:
                    await raw.term()
            else:
                await raw.nak(delay=policy.delay(attempt))
                EVENTS.labels(self.outer.service, consumer, "naked").inc()


# -- subscribers -------------------------------------------------------------------------


@dataclass
class _Consumer:
    stream: str
    durable: str
    config: ConsumerConfig


def accepted_events(func: Callable[..., Any]) -> tuple[type, ...]:
    """The event classes a handler takes: its first parameter's type (``list[...]`` of a
    batch handler), unions spelled out."""
    hints = typing.get_type_hints(func)
    hints.pop("return", None)
    first = next(iter(hints.values()), None)
    if typing.get_origin(first) is list:
        first = typing.get_args(first)[0]
    if typing.get_origin(first) in (typing.Union, types.UnionType):
        return tuple(typing.get_args(first))
    return (first,) if isinstance(first, type) and issubclass(first, BaseModel) else ()


class _PullFetch:
    """A pull subscription as FastStream's consume loops should see it.

    1. **No lost batches.** FastStream's loops catch ``nats.errors.TimeoutError``, but
       nats-py's ``fetch`` also raises the builtin ``TimeoutError`` (asyncio's: a pull
       request that ended before its wait, common under load with a 0.1 s batch wait). That
       escaped the loop, which FastStream's supervisor restarts -- and a batch loop lost the
       events it had gathered in that round: delivered, never handled, redelivered only after
       the consumer's ack wait (store: 30 s). That was the redeliveries and the 30 s stalls of
       bench.cost (docs/cost.md). Every timeout leaves here as ``nats.errors.TimeoutError``.
    2. **Batch consumers long-poll for their first event** (``idle_s``). FastStream's batch
       loop fetches until the batch is full or ``wait_s`` (the batch wait) has passed, and
       JetStream answers a pull request as soon as anything is there: so an idle or trickling
       consumer sent a pull request every batch wait, ten a second per consumer, most of them
       answered "nothing" (store's three batch consumers: about half of NATS's messages per
       submitted message). Here the first fetch of a round waits up to ``idle_s`` (one
       request, answered when an event arrives), then the batch is topped up for at most
       ``wait_s`` from that first event, as before.
    """

    def __init__(self, inner: Any, *, idle_s: float | None, wait_s: float,
                 keepalive_s: float | None = None, max_hold_s: float = 60.0) -> None:
        self._inner = inner
        self._idle_s = idle_s
        self._wait_s = wait_s
        # 3. With ``keepalive_s``: events fetched but not finished yet -- also those waiting in
        #    FastStream's in-memory queue for a free handler, which no handler keeps alive --
        #    are reported "in progress" every ``keepalive_s`` (for at most ``max_hold_s`` from
        #    the fetch), so a busy replica's queue does not outlive the ack wait and come back
        #    as copies of events it is about to handle (notify's 6 s ack wait).
        self._keepalive_s = keepalive_s
        self._max_hold_s = max_hold_s
        self._held: dict[int, tuple[Msg, float]] = {}
        self._beat: asyncio.Task[None] | None = None

    async def _fetch(self, batch: int, wait: float | None) -> list[Msg]:
        try:
            msgs: list[Msg] = await self._inner.fetch(batch, timeout=wait)
        except NatsTimeout:
            raise
        except TimeoutError as exc:  # asyncio's: what FastStream's loop does not expect
            raise NatsTimeout from exc
        if self._keepalive_s is not None and msgs:
            now = time.monotonic()
            for m in msgs:
                self._held[id(m)] = (m, now)
            if self._beat is None or self._beat.done():
                self._beat = asyncio.create_task(self._keep_held(self._keepalive_s),
                                                 name="pull-keepalive")
        return msgs

    async def _keep_held(self, every_s: float) -> None:
        while self._held:
            await asyncio.sleep(every_s)
            now = time.monotonic()
            for key, (m, since) in list(self._held.items()):
                if m.is_acked or now - since > self._max_hold_s:
                    del self._held[key]  # done (acked, nak'ed, terminated), or held too long
                    continue
                with contextlib.suppress(Exception):  # NATS away: a redelivery is harmless
                    await m.in_progress()

    async def unsubscribe(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        self._held.clear()
        await self._inner.unsubscribe()

    async def fetch(self, batch: int = 1, timeout: float | None = 5.0,  # noqa: ASYNC109 -- nats-py API
                    heartbeat: float | None = None) -> list[Msg]:
        if self._idle_s is None or (timeout is not None and timeout < self._wait_s / 2):
            # Not long-polled; or FastStream's batch loop asking for the rest of a round.
            return await self._fetch(batch, timeout)
        # A timeout (nothing for idle_s) goes to FastStream's loop, which simply asks again.
        msgs = await self._fetch(1, self._idle_s)
        # FastStream's own deadline (taken before this call) has passed by the end of the
        # top-up unless the batch is full: it hands the batch over.
        deadline = time.monotonic() + self._wait_s
        while len(msgs) < batch and (remaining := deadline - time.monotonic()) > 0:
            try:
                msgs += await self._fetch(batch - len(msgs), remaining)
            except TimeoutError:
                break
        return msgs

    def __getattr__(self, name: str) -> Any:  # unsubscribe, consumer_info, ...
        return getattr(self._inner, name)


def _wrap_pulls(sub: Any, *, idle_s: float | None, wait_s: float,
                keepalive_s: float | None = None, max_hold_s: float = 60.0) -> None:
    """Wrap ``sub``'s pull subscription in ``_PullFetch`` as soon as it is made (its consume
    task starts only at the next await, so it sees the wrapper)."""
    create = sub._create_subscription

    async def create_then_wrap() -> None:
        await create()
        if sub.subscription is not None and not isinstance(sub.subscription, _PullFetch):
            sub.subscription = _PullFetch(sub.subscription, idle_s=idle_s, wait_s=wait_s,
                                          keepalive_s=keepalive_s, max_hold_s=max_hold_s)

    sub._create_subscription = create_then_wrap


class Registration:
    """What ``EventWorker.subscriber`` returns: decorate the handler with it.
    ``subscriber`` is FastStream's subscriber (``process_message`` in tests)."""

    def __init__(self, sub: Any, outcomes: EventOutcomes, policy: DeliveryPolicy,
                 batch: bool) -> None:
        self.subscriber = sub
        self._outcomes = outcomes
        self._policy = policy
        self._batch = batch

    def __call__(self, func: Callable[..., Awaitable[Any]]) -> Any:
        accepts = accepted_events(func)
        self._outcomes.subscribers[id(self.subscriber)] = (self._policy, accepts)
        decode = model_decoder(accepts)
        return self.subscriber(func, decoder=batch_decoder(decode) if self._batch
                               else one_decoder(decode))


class EventWorker:
    """A service's JetStream consumers on one FastStream broker, with the shared contract.

    ``subscriber(...)`` registers a typed handler on a durable pull consumer of the
    ``SECMSG`` stream; ``ensure_consumers(nc)`` creates or updates those consumers on the
    server (JetStream binds an existing durable without changing it, so a new
    ``max_deliver`` or ``ack_wait`` would otherwise never reach it).
    """

    def __init__(self, broker: NatsBroker, *, service: str,
                 dead_letters: Callable[[], DeadLetterSink],
                 policy: DeliveryPolicy | None = None,
                 inbox_prefix: bytes = b"_INBOX.") -> None:
        self.broker = broker
        # The pull subscriptions' replies: the service's own inbox (bus.subscriber_inbox), as
        # its NATS user may read no other.
        self.inbox_prefix = inbox_prefix
        self.outcomes = EventOutcomes(service=service, dead_letters=dead_letters,
                                      policy=policy or DeliveryPolicy())
        # Outermost of the broker's own middlewares: it sees every exception, tracing included.
        broker.insert_middleware(self.outcomes)
        self.consumers: list[_Consumer] = []
        self.subscribers: dict[str, Any] = {}  # FastStream's subscriber by durable (tests)

    def subscriber(self, subject: str, *, durable: str, batch_size: int,
                   fetch_timeout_s: float, batch: bool = False, max_workers: int | None = None,
                   max_ack_pending: int | None = None, policy: DeliveryPolicy | None = None,
                   stream: str = subjects.STREAM,
                   idle_wait_s: float | None = None,
                   keep_alive_held: bool = False) -> Registration:
        """A durable pull consumer of ``stream`` (``SECMSG`` unless the service keeps a
        stream of its own) filtered to ``subject``. ``policy`` overrides the worker's: a
        consumer that re-schedules by nak'ing (a retry queue) needs a ``max_deliver`` that
        covers its schedule, since every delivery counts.

        A batch consumer's ``fetch_timeout_s`` is how long a batch may wait to fill; with
        ``idle_wait_s`` its first fetch waits that long for the first event instead
        (``_PullFetch``: one pull request per ``idle_wait_s`` while idle, not one per
        batch wait). With ``keep_alive_held`` every fetched event is reported in progress
        every quarter of the ack wait until it is finished (at most ten ack waits): for a
        consumer with a short ack wait whose events may queue for a free handler."""
        policy = policy or self.outcomes.policy
        config = ConsumerConfig(
            durable_name=durable, name=durable, filter_subject=subject,
            ack_wait=policy.ack_wait_s, max_deliver=policy.max_deliver + RECORD_RETRIES,
            max_ack_pending=max_ack_pending)
        self.consumers.append(_Consumer(stream, durable, config))
        kwargs: dict[str, Any] = {}
        if max_workers is not None:
            kwargs["max_workers"] = max_workers
        sub = self.broker.subscriber(
            subject, stream=JStream(stream, declare=False), durable=durable,
            pull_sub=PullSub(batch_size=batch_size, timeout=fetch_timeout_s, batch=batch),
            ack_policy=AckPolicy.NACK_ON_ERROR, inbox_prefix=self.inbox_prefix,
            config=ConsumerConfig(ack_wait=policy.ack_wait_s,
                                  max_deliver=policy.max_deliver + RECORD_RETRIES,
                                  max_ack_pending=max_ack_pending),
            **kwargs)
        long_poll = batch and idle_wait_s is not None and idle_wait_s > fetch_timeout_s
        _wrap_pulls(sub, idle_s=idle_wait_s if long_poll else None, wait_s=fetch_timeout_s,
                    keepalive_s=policy.ack_wait_s / 4 if keep_alive_held else None,
                    max_hold_s=10 * policy.ack_wait_s)
        self.subscribers[durable] = sub
        return Registration(sub, self.outcomes, policy, batch)

    async def ensure_consumers(self, nc: NATS) -> None:
        """Create each durable consumer, or bring its limits up to date. Idempotent."""
        js = nc.jetstream()
        for c in self.consumers:
            await js.add_consumer(c.stream, config=c.config)


# -- publishing --------------------------------------------------------------------------


class BrokerPublisher:
    """Publish events through the worker's own broker (one NATS connection per service).

    Waits for the JetStream acknowledgement and sets ``Nats-Msg-Id`` (deterministic, so a
    retried publish inside the duplicate window is dropped by the server). Returns False when
    the server dropped it as a duplicate. Raises ``DependencyUnavailable`` when nothing was
    sent, ``PublishUnconfirmed`` when no acknowledgement came back.
    """

    def __init__(self, broker: NatsBroker, *, timeout: float = 5.0) -> None:
        self._broker = broker
        self._timeout = timeout

    async def publish(self, event: BaseModel, msg_id: str) -> bool:
        subj = subjects.subject_for(event)
        kind = str(getattr(event, "kind", type(event).__name__))
        try:
            connected = self._broker.connection.is_connected
        except Exception:
            connected = False
        if not connected:
            raise DependencyUnavailable(f"event bus unavailable, could not publish {subj} "
                                        "(NATS is not connected)")
        try:
            ack = await self._broker.publish(event, subj, headers={"Nats-Msg-Id": msg_id},
                                             stream=subjects.STREAM, timeout=self._timeout)
        except (NatsError, OSError, TimeoutError) as exc:
            telemetry.EVENTS_PUBLISHED.labels(kind, "failed").inc()
            raise PublishUnconfirmed(
                f"event bus did not confirm {subj} ({type(exc).__name__})") from exc
        duplicate = bool(getattr(ack, "duplicate", False))
        telemetry.EVENTS_PUBLISHED.labels(kind, "duplicate" if duplicate else "published").inc()
        return not duplicate

    async def ping(self) -> None:
        try:
            nc = self._broker.connection
        except Exception:
            nc = None
        if nc is None or not nc.is_connected:
            raise DependencyUnavailable("NATS is not connected")
        try:
            await nc.jetstream(timeout=self._timeout).stream_info(subjects.STREAM)
        except (NatsError, OSError, TimeoutError) as exc:
            raise DependencyUnavailable(f"JetStream unavailable ({type(exc).__name__})") from exc
