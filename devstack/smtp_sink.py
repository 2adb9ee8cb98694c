"""A real SMTP server (aiosmtpd) that captures mail, for local runs and tests.

Each accepted message is written as ``<dir>/<n>-<time>.eml`` (atomic rename) and kept in
memory. Tests can make it misbehave: answer 4xx or 5xx to RCPT or DATA, or drop the
connection mid-DATA, for the next N messages or until told otherwise.

Run alone:  python -m devstack.smtp_sink --port 2525 --dir .run/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import itertools
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: float
    helo: str = ""  # the name the client gave in EHLO/HELO

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, _class=EmailMessage, policy=email.policy.default)


@dataclass
class Faults:
    """What the sink does to the next messages. ``count`` None = until reset."""

    mode: str = "ok"  # ok | tempfail | permfail | drop | hang
    count: int | None = None
    hang_seconds: float = 30.0

    def take(self) -> str:
        if self.mode == "ok":
            return "ok"
        mode = self.mode
        if self.count is not None:
            self.count -= 1
            if self.count <= 0:
                self.mode, self.count = "ok", None
        return mode


@dataclass
class SinkHandler:
    directory: Path | None = None
    messages: list[Captured] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: int = 0
    _seq: Any = field(default_factory=itertools.count)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            mode = self.faults.take()
        if mode == "tempfail":
            return "451 4.3.0 Temporary failure, try again later"
        if mode == "permfail":
            return "550 5.1.1 Mailbox unavailable"
        if mode == "drop":
            if server.transport is not None:
                server.transport.close()
            return "421 4.4.2 Connection dropped"
        if mode == "hang":
            import asyncio

            await asyncio.sleep(self.faults.hang_seconds)
        data = envelope.original_content or b""
        cap = Captured(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], data,
                       time.time(), str(session.host_name or ""))
        with self.lock:
            n = next(self._seq)
            self.messages.append(cap)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            final = self.directory / f"{n:06d}-{int(cap.received_at)}.eml"
            tmp = final.with_suffix(".tmp")
            # As a final delivery writes it: the envelope sender and the EHLO name, so the
            # .eml shows what a mailbox would (Return-Path, Received) above the bytes sent.
            peer = session.peer[0] if isinstance(session.peer, tuple) else "unknown"
            trace = (f"Return-Path: <{cap.mail_from}>\r\n"
                     f"Received: from {cap.helo or 'unknown'} ([{peer}]) by secmsg-sink;"
                     f" {email.utils.formatdate(cap.received_at)}\r\n")
            tmp.write_bytes(trace.encode("ascii", "replace") + data)
            tmp.replace(final)
        return "250 2.0.0 OK queued"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    def for_recipient(self, address: str) -> list[Captured]:
        with self.lock:
            return [m for m in self.messages if address.lower() in
                    (r.lower() for r in m.rcpt_tos)]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()


class Sink:
    """Start/stop wrapper around an aiosmtpd Controller (its own thread and loop)."""

    def __init__(self, port: int, directory: Path | None = None, **smtp_kwargs: Any):
        self.port = port
        self.handler = SinkHandler(directory)
        if directory is not None and directory.exists():
            # Keep numbering after what earlier runs captured, so names sort in arrival order.
            numbers = [int(p.name.split("-", 1)[0]) for p in directory.glob("*.eml")
                       if p.name.split("-", 1)[0].isdigit()]
            self.handler._seq = itertools.count(max(numbers, default=-1) + 1)
        self._kwargs = smtp_kwargs
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10, **self._kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages


def main() -> None:
    ap = argparse.ArgumentParser(description="secmsg local SMTP sink")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--dir", type=Path, default=Path(".run/mail"))
    args = ap.parse_args()
    sink = Sink(args.port, args.dir)
    sink.start()
    print(f"SMTP sink on 127.0.0.1:{args.port}, mail lands in {args.dir}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()


if __name__ == "__main__":
    main()


class StallingProxy:
    """A TCP proxy in front of an SMTP server that can *stall* like a hung server: while
    stalled, new connections are accepted and never get a byte (not even the greeting), and
    open sessions go silent (what the client sends is dropped, nothing comes back).
    ``resume()`` closes every silenced connection and forwards new ones again. Runs on the
    caller's event loop: ``await start()``, ``stall()``, ``resume()``, ``await stop()``.
    Nothing sent during a stall reaches the server, so nothing can be delivered later behind
    the client's back."""

    def __init__(self, upstream_port: int, port: int = 0) -> None:
        import asyncio

        self.upstream_port = upstream_port
        self.port = port
        self.stalled = False
        self.accepted_while_stalled = 0
        self._held: list[Any] = []
        self._open: set[Any] = set()  # client-side writers of forwarded sessions
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        import asyncio

        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        self.stalled = True
        self._held.extend(self._open)  # open sessions go silent and are dropped on resume
        self._open.clear()

    def resume(self) -> None:
        self.stalled = False
        held, self._held = self._held, []
        for w in held:
            w.close()

    async def stop(self) -> None:
        self.resume()
        for w in list(self._open):
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: Any, writer: Any) -> None:
        import asyncio
        import contextlib

        if self.stalled:
            self.accepted_while_stalled += 1
            self._held.append(writer)
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._open.add(writer)

        async def pipe(src: Any, dst: Any) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if writer not in self._open:
                        continue  # silenced by a stall: swallow, answer nothing
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        finally:
            self._open.discard(writer)
            up_w.close()
