"""notify as real processes (``python -m secmsg.notify``): health, replicas, SIGKILL, SIGTERM."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import httpx
import pytest

from devstack.servers import Server
from devstack.smtp_sink import Sink
from tests.consumers import settled
from tests.notify.conftest import FAST, Bus, all_claims, eventually, stored_event

pytestmark = pytest.mark.timeout(120)


def sent_metric(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("secmsg_notifications_total{") and 'outcome="sent"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def per_recipient(sink: Sink) -> Counter[str]:
    with sink.handler.lock:
        return Counter(r.lower() for m in sink.handler.messages for r in m.rcpt_tos)


async def test_health_readiness_metrics_and_clean_sigterm(
        tenant: str, sink: Sink, nbus: Bus, services: Any, nats_server: Server) -> None:
    proc = services("notify", **FAST)
    async with httpx.AsyncClient(base_url=proc.base_url, timeout=5) as http:
        assert (await http.get("/healthz")).status_code == 200
        r = await http.get("/readyz")
        assert r.status_code == 200, r.text
        await nbus.publish(stored_event(to=["bob@example.org"]))
        await eventually(lambda: sink.handler.for_recipient("bob@example.org"), what="mail")
        metrics = await eventually(
            lambda: _metrics_with_sent(http, 1), what="sent counted in /metrics")
        assert 'secmsg_events_total{consumer="notify-stored",outcome="acked",service="notify"}' \
            in metrics
        assert "secmsg_notify_smtp_send_seconds_bucket" in metrics

        await nbus.nc.close()
        nats_server.stop()
        r = await eventually(lambda: _readyz(http, 503), what="/readyz 503 without NATS")
        assert "nats" in r.json()["reasons"]
        nats_server.start()
        await eventually(lambda: _readyz(http, 200), what="/readyz 200 again")
    assert proc.stop() == 0, proc.tail()


async def _metrics_with_sent(http: httpx.AsyncClient, n: int) -> str:
    text = (await http.get("/metrics")).text
    return text if sent_metric(text) >= n else ""


async def _readyz(http: httpx.AsyncClient, status: int) -> httpx.Response | None:
    r = await http.get("/readyz")
    return r if r.status_code == status else None


async def test_two_replicas_share_the_work_and_notify_each_recipient_once(
        tenant: str, sink: Sink, nbus: Bus, services: Any) -> None:
    a = services("notify", **FAST)
    b = services("notify", **FAST)
    events = [stored_event(to=[f"to{i}@example.org"], cc=[f"cc{i}@example.net"])
              for i in range(30)]
    for ev in events:
        await nbus.publish(ev)
    expected = {r.address for ev in events for r in ev.recipients}
    await eventually(lambda: set(per_recipient(sink)) >= expected, timeout=60,
                     what="a mail to each of the 60 recipients")
    # Every event acknowledged by one replica or the other: no duplicate can come later.
    await eventually(lambda: settled(nbus.nc), what="every event handled")
    counts = per_recipient(sink)
    assert set(counts) == expected
    assert max(counts.values()) == 1, [r for r, n in counts.items() if n > 1]
    async with httpx.AsyncClient(timeout=5) as http:
        sent = [sent_metric((await http.get(p.base_url + "/metrics")).text) for p in (a, b)]
    assert sum(sent) == 60
    assert all(n > 0 for n in sent), f"one replica did all the work: {sent}"


class RcptGate:
    """Holds the sink's RCPT replies while closed, so no DATA -- hence no mail in the
    accepted-but-not-recorded window -- is in flight when the worker is killed."""

    def __init__(self, sink: Sink) -> None:
        self.open = threading.Event()
        self.open.set()
        self.parked = 0
        self._lock = threading.Lock()
        sink.handler.handle_RCPT = self.handle_RCPT  # type: ignore[attr-defined]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if not self.open.is_set():
            with self._lock:
                self.parked += 1
            while not self.open.is_set():
                await asyncio.sleep(0.02)
            with self._lock:
                self.parked -= 1
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_sigkill_mid_load_then_restart_notifies_each_recipient_once(
        tenant: str, sink: Sink, nbus: Bus, services: Any) -> None:
    gate = RcptGate(sink)
    slow = {**FAST, "SECMSG_SMTP_TIMEOUT_S": "5", "SECMSG_NOTIFY_LEASE_S": "6"}
    proc = services("notify", **slow)
    events = [stored_event(to=[f"k{i}@example.org", f"l{i}@example.org"]) for i in range(30)]
    for ev in events:
        await nbus.publish(ev)
    expected = {r.address for ev in events for r in ev.recipients}
    await eventually(lambda: len(sink.messages) >= 10, what="the first mails")
    gate.open.clear()
    await eventually(lambda: gate.parked >= 1, what="a send parked at RCPT")
    await asyncio.sleep(0.5)  # any DATA already past the gate is answered and recorded
    before = len(sink.messages)
    proc.kill()
    assert before < len(expected), "all mail went out before the kill; nothing was mid-flight"
    claims = sum(d["state"] == "sending" for d in (await all_claims(nbus.nc)).values())
    gate.open.set()

    services("notify", **slow)
    await eventually(lambda: set(per_recipient(sink)) >= expected, timeout=60,
                     what="a mail to each recipient after the restart")
    # The killed worker's events redelivered and acknowledged: no duplicate can come later.
    await eventually(lambda: settled(nbus.nc), timeout=60, what="every event handled")
    counts = per_recipient(sink)
    assert set(counts) == expected
    assert max(counts.values()) == 1, [r for r, n in counts.items() if n > 1]
    assert claims >= 1, "expected claims left behind by the killed worker"
    states = {d["state"] for d in (await all_claims(nbus.nc)).values()}
    assert states == {"sent"}
    assert len(await all_claims(nbus.nc)) == len(expected)
