"""worker.EventWorker in memory (FastStream's TestNatsBroker): typed handlers, and the
handler's outcome deciding ack / nak / dead letter. The same contract against a real NATS and
MongoDB is in tests/store/test_dead_letters.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from pydantic import BaseModel

from secmsg.shared import subjects, worker
from secmsg.shared.errors import DependencyUnavailable, PermanentError
from secmsg.shared.events import MessageStored, NotificationSent
from tests.shared.jetstream_fakes import raw

STORED = subjects.subject("acme", subjects.MESSAGE_STORED)
SENT = subjects.subject("acme", subjects.NOTIFICATION_SENT)
POLICY = worker.DeliveryPolicy(max_deliver=3, backoff_base_s=0.5, backoff_cap_s=10)


def stored(n: int = 0) -> MessageStored:
    from datetime import UTC, datetime

    return MessageStored(tenant_id="acme", message_id=f"m{n}-{uuid.uuid4().hex[:6]}",
                         sender="a@acme.example", recipients=[], subject="s",
                         attachment_count=0, received_at=datetime.now(UTC))


def sent(n: int) -> NotificationSent:
    return NotificationSent(tenant_id="acme", message_id=uuid.uuid4().hex,
                            recipient=f"r{n}@example.org", attempt=1, smtp_target="platform")


class Sink:
    def __init__(self) -> None:
        self.letters: list[worker.DeadLetter] = []
        self.down = False

    async def record(self, letter: worker.DeadLetter) -> None:
        if self.down:
            raise DependencyUnavailable("database unavailable")
        self.letters.append(letter)


@pytest.fixture
def sink() -> Sink:
    return Sink()


def make(sink: Sink, policy: worker.DeliveryPolicy = POLICY) -> tuple[NatsBroker,
                                                                       worker.EventWorker]:
    broker = NatsBroker()
    return broker, worker.EventWorker(broker, service="t", policy=policy,
                                      dead_letters=lambda: sink)


async def test_handler_gets_the_typed_event_and_its_published_event_reaches_the_next(
        sink: Sink) -> None:
    broker, ew = make(sink)
    publisher = worker.BrokerPublisher(broker)
    seen: list[Any] = []

    @ew.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="a", batch_size=1,
                   fetch_timeout_s=1)
    async def on_stored(event: MessageStored) -> None:
        seen.append(event)
        await publisher.publish(sent(1).model_copy(update={"message_id": event.message_id}),
                                f"{event.message_id}:sent")

    @ew.subscriber(subjects.any_tenant("notification.>"), durable="b", batch_size=10,
                   fetch_timeout_s=1, batch=True)
    async def on_sent(events: list[NotificationSent]) -> None:
        seen.extend(events)

    ev = stored()
    async with TestNatsBroker(broker) as br:
        await br.publish(ev, STORED, stream=subjects.STREAM)
    assert seen[0] == ev and type(seen[0]) is MessageStored
    assert isinstance(seen[1], NotificationSent) and seen[1].message_id == ev.message_id
    assert sink.letters == []


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "undecodable event"),
    (b'{"kind": "message.stored", "version": 2}', "undecodable event"),
    (sent(0).model_dump_json(), "unexpected event kind 'notification.sent'"),
])
async def test_poison_is_dead_lettered_with_its_payload_and_terminated(
        sink: Sink, body: bytes | str, reason: str) -> None:
    broker, ew = make(sink)
    calls: list[Any] = []
    sub = ew.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="a",
                        batch_size=1, fetch_timeout_s=1)

    @sub
    async def on_stored(event: MessageStored) -> None:
        calls.append(event)

    m = raw(body, seq=42)
    async with TestNatsBroker(broker):
        await sub.subscriber.process_message(m)
    assert calls == []
    assert m.settled == "term"  # type: ignore[attr-defined]
    (letter,) = sink.letters
    assert reason in letter.reason
    assert (letter.subject, letter.stream_seq, letter.id, letter.msg_id, letter.service) == (
        STORED, 42, f"{subjects.STREAM}:42", "id-1", "t")
    assert letter.payload == m.data


async def test_a_bug_is_retried_with_back_off_then_dead_lettered_on_the_last_delivery(
        sink: Sink) -> None:
    broker, ew = make(sink)
    sub = ew.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="a",
                        batch_size=1, fetch_timeout_s=1)

    @sub
    async def on_stored(event: MessageStored) -> None:
        raise RuntimeError("template bug")

    body = stored().model_dump_json()
    async with TestNatsBroker(broker):
        firsts = [raw(body, delivered=n) for n in (1, 2)]
        for m in firsts:
            await sub.subscriber.process_message(m)
        assert [m.settled for m in firsts] == ["nak 0.5", "nak 1.0"]  # type: ignore[attr-defined]
        assert sink.letters == []
        last = raw(body, delivered=3)
        await sub.subscriber.process_message(last)
    assert last.settled == "term"  # type: ignore[attr-defined]
    (letter,) = sink.letters
    assert letter.reason == "RuntimeError: template bug (gave up after 3 deliveries)"
    assert (letter.error, letter.deliveries, letter.payload) == ("RuntimeError", 3,
                                                                  body.encode())


async def test_permanent_error_is_dead_lettered_at_once_and_transient_naked(
        sink: Sink) -> None:
    broker, ew = make(sink)
    sub = ew.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="a",
                        batch_size=1, fetch_timeout_s=1)
    fail: list[Exception] = [PermanentError("object missing"),
                             DependencyUnavailable("database unavailable")]

    @sub
    async def on_stored(event: MessageStored) -> None:
        raise fail.pop(0)

    async with TestNatsBroker(broker):
        a, b = raw(stored().model_dump_json()), raw(stored().model_dump_json(), delivered=2)
        await sub.subscriber.process_message(a)
        await sub.subscriber.process_message(b)
    assert (a.settled, b.settled) == ("term", "nak 1.0")  # type: ignore[attr-defined]
    assert [(x.reason, x.error) for x in sink.letters] == [("object missing",
                                                            "PermanentError")]


async def test_no_terminate_without_a_record_and_a_crash_loop_ends_in_dead_letters(
        sink: Sink) -> None:
    broker, ew = make(sink)
    sub = ew.subscriber(subjects.any_tenant(subjects.MESSAGE_STORED), durable="a",
                        batch_size=1, fetch_timeout_s=1)
    ran: list[int] = []

    @sub
    async def on_stored(event: MessageStored) -> None:
        ran.append(1)
        raise PermanentError("bad")

    sink.down = True
    async with TestNatsBroker(broker):
        m = raw(stored().model_dump_json())
        await sub.subscriber.process_message(m)
        assert m.settled == f"nak {POLICY.backoff_cap_s}"  # type: ignore[attr-defined]
        sink.down = False
        # Delivered once more than max_deliver: earlier attempts never finished.
        again = raw(stored().model_dump_json(), delivered=POLICY.max_deliver + 1)
        await sub.subscriber.process_message(again)
    assert again.settled == "term"  # type: ignore[attr-defined]
    assert len(ran) == 1
    assert "without finishing" in sink.letters[0].reason


async def test_batch_poison_alone_and_one_bad_event_does_not_hold_back_the_others(
        sink: Sink) -> None:
    broker, ew = make(sink, worker.DeliveryPolicy(max_deliver=1))
    handled: list[list[str]] = []
    sub = ew.subscriber(subjects.any_tenant("notification.>"), durable="b", batch_size=10,
                        fetch_timeout_s=1, batch=True)

    @sub
    async def on_sent(events: list[NotificationSent]) -> None:
        if any(e.recipient == "r1@example.org" for e in events):
            raise RuntimeError("bug with r1")
        handled.append([e.recipient for e in events])

    batch = [raw(sent(0).model_dump_json(), SENT, seq=1), raw(b"[]", SENT, seq=2),
             raw(sent(1).model_dump_json(), SENT, seq=3),
             raw(sent(2).model_dump_json(), SENT, seq=4)]
    async with TestNatsBroker(broker):
        await sub.subscriber.process_message(batch)
    assert handled == [["r0@example.org"], ["r2@example.org"]]
    assert [m.settled for m in batch] == ["ack", "term", "term", "ack"]  # type: ignore[attr-defined]
    assert [(x.stream_seq, x.reason.split(" ")[0]) for x in sink.letters] == [
        (2, "undecodable"), (3, "RuntimeError:")]


async def test_batch_transient_failure_naks_all(sink: Sink) -> None:
    broker, ew = make(sink)
    sub = ew.subscriber(subjects.any_tenant("notification.>"), durable="b", batch_size=10,
                        fetch_timeout_s=1, batch=True)

    @sub
    async def on_sent(events: list[NotificationSent]) -> None:
        raise DependencyUnavailable("database unavailable")

    batch = [raw(sent(0).model_dump_json(), SENT), raw(sent(1).model_dump_json(), SENT,
                                                        delivered=2)]
    async with TestNatsBroker(broker):
        await sub.subscriber.process_message(batch)
    assert [m.settled for m in batch] == ["nak 0.5", "nak 1.0"]  # type: ignore[attr-defined]
    assert sink.letters == []


class Retry(BaseModel):
    """A service's own message on a stream of its own (not a shared event)."""

    event: MessageStored
    round: int


async def test_a_handler_of_a_service_model_on_its_own_stream(sink: Sink) -> None:
    broker, ew = make(sink)
    seen: list[Retry] = []
    sub = ew.subscriber("svc.retry.*", durable="r", batch_size=1, fetch_timeout_s=1,
                        stream="SVC_RETRY")

    @sub
    async def on_retry(item: Retry) -> None:
        seen.append(item)

    good = Retry(event=stored(), round=2)
    async with TestNatsBroker(broker) as br:
        await br.publish(good, "svc.retry.acme", stream="SVC_RETRY")
        bad = raw(b'{"round": "x"}', "svc.retry.acme")
        await sub.subscriber.process_message(bad)
    assert seen == [good]
    assert bad.settled == "term"
    assert sink.letters[0].reason.startswith("undecodable (event: Field required")
    assert ew.consumers[0].stream == "SVC_RETRY"


async def test_an_all_poison_batch_never_calls_the_handler(sink: Sink) -> None:
    broker, ew = make(sink)
    sub = ew.subscriber(subjects.any_tenant("notification.>"), durable="b", batch_size=10,
                        fetch_timeout_s=1, batch=True)

    @sub
    async def on_sent(events: list[NotificationSent]) -> None:
        raise AssertionError("called")

    batch = [raw(b"[]", SENT, seq=1), raw(b"", SENT, seq=2),
             raw(stored().model_dump_json(), SENT, seq=3)]  # a kind it does not take
    async with TestNatsBroker(broker):
        await sub.subscriber.process_message(batch)
    assert [m.settled for m in batch] == ["term"] * 3
    assert [x.stream_seq for x in sink.letters] == [1, 2, 3]
    assert "unexpected event kind 'message.stored'" in sink.letters[2].reason


def test_a_dead_letter_sent_to_store_is_kept_as_the_same_document() -> None:
    """Another worker's letter travels as DeadLetterRecorded; store keeps what store's own
    letter would have been (one document shape, written once)."""
    letter = worker.DeadLetter(service="notify", consumer="notify", subject="secmsg.a.x",
                               reason="poison", payload=b"\x00{not json", deliveries=3,
                               stream_seq=42, msg_id="m1", error="ValueError")
    wire = worker.DeadLetterRecorded.of(letter).model_dump_json()
    kept = worker.DeadLetterRecorded.model_validate_json(wire).document()
    assert kept == letter.document()
    assert kept["_id"] == f"{subjects.STREAM}:42" and kept["size"] == 10
    assert kept["payload"] == b"\x00{not json" and kept["state"] == "open"
