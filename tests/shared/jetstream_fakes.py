"""JetStream messages as a FastStream subscriber gets them, for in-memory handler tests
(``subscriber.process_message(raw(...))`` under ``TestNatsBroker``): delivery count, stream
sequence and consumer in their metadata, and how each was settled (``settled``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faststream.nats.testing import PatchedMessage

from secmsg.shared import subjects

STORED = subjects.subject("acme", subjects.MESSAGE_STORED)


@dataclass
class Meta:
    num_delivered: int
    consumer: str = "c"
    stream: str = subjects.STREAM
    sequence: Any = None


class Raw(PatchedMessage):
    """A JetStream message as the subscriber gets it, recording how it was settled."""

    delivered = 1
    seq = 7
    consumer = "c"
    settled = ""

    @property
    def metadata(self) -> Any:  # type: ignore[override]
        return Meta(self.delivered, consumer=self.consumer,
                    sequence=type("Seq", (), {"stream": self.seq})())

    async def ack(self) -> None:
        self.settled = "ack"
        self._ackd = True

    async def nak(self, delay: float | None = None) -> None:
        self.settled = f"nak {delay}"
        self._ackd = True

    async def term(self) -> None:
        self.settled = "term"
        self._ackd = True


def raw(body: bytes | str, subject: str = STORED, delivered: int = 1, seq: int = 7,
        consumer: str = "c") -> Raw:
    m = Raw(_client=None, subject=subject, reply="",  # type: ignore[arg-type]
            data=body.encode() if isinstance(body, str) else body,
            headers={"Nats-Msg-Id": "id-1"})
    m.delivered, m.seq, m.consumer = delivered, seq, consumer
    return m
