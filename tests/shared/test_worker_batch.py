"""worker.process_batch (the earlier manual loop, kept until notify moves to EventWorker):
poison alone, ack only after the handler, nak all on failure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from secmsg.shared import mongo, subjects, worker
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.events import NotificationSent

SUBJECT = subjects.subject("acme", subjects.NOTIFICATION_SENT)


@dataclass
class Msg:
    data: bytes
    delivered: int = 1
    subject: str = SUBJECT
    log: list[str] = field(default_factory=list)

    @property
    def metadata(self) -> Any:
        return type("Meta", (), {"num_delivered": self.delivered})()

    async def ack(self) -> None:
        self.log.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.log.append(f"nak {delay}")

    async def term(self) -> None:
        self.log.append("term")


def good(n: int) -> Msg:
    ev = NotificationSent(tenant_id="acme", message_id=uuid.uuid4().hex,
                          recipient=f"r{n}@example.org", attempt=1, smtp_target="platform")
    return Msg(ev.model_dump_json().encode())


async def test_poison_terminated_alone_and_good_ones_acked_after_the_handler(
        mongo_db: Any) -> None:
    msgs = [good(0), Msg(b"{not json"), good(1)]
    seen: list[list[str]] = []

    async def handler(events: list[NotificationSent]) -> None:
        assert all(m.log == [] for m in (msgs[0], msgs[2])), "acked before the handler ended"
        seen.append([e.recipient for e in events])

    await worker.process_batch(msgs, NotificationSent, handler, db=mongo_db,
                               service="t", consumer="c")
    assert seen == [["r0@example.org", "r1@example.org"]]
    assert [m.log for m in msgs] == [["ack"], ["term"], ["ack"]]
    dead = await mongo_db[mongo.DEAD_LETTERS].find({}).to_list(None)
    assert [(d["service"], d["subject"], d["payload"], d["state"]) for d in dead] == [
        ("t", SUBJECT, b"{not json", "open")]


async def test_a_failing_handler_naks_every_good_message_with_its_back_off(
        mongo_db: Any) -> None:
    msgs = [good(0), good(1)]
    msgs[1].delivered = 3

    async def down(events: list[NotificationSent]) -> None:
        raise DependencyUnavailable("database unavailable")

    await worker.process_batch(msgs, NotificationSent, down, db=mongo_db, service="t",
                               consumer="c", backoff_fn=lambda n: float(n))
    assert [m.log for m in msgs] == [["nak 1.0"], ["nak 3.0"]]

    async def bug(events: list[NotificationSent]) -> None:
        raise RuntimeError("boom")

    await worker.process_batch([good(2)], NotificationSent, bug, db=mongo_db, service="t",
                               consumer="c", backoff_fn=lambda n: 0.5)
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_an_all_poison_batch_never_calls_the_handler(mongo_db: Any) -> None:
    msgs = [Msg(b"[]"), Msg(b"")]

    async def handler(events: list[Any]) -> None:
        raise AssertionError("called")

    await worker.process_batch(msgs, NotificationSent, handler, db=mongo_db, service="t",
                               consumer="c")
    assert [m.log for m in msgs] == [["term"], ["term"]]
