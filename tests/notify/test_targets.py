"""SMTP targets: the fixed reason words, the per-target rate (a tenant may only lower it),
one hanging tenant server not stalling others through the real worker even with more events
than handlers, and the standby relay chosen from ``dnsbl_status``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest

from devstack.servers import free_port
from devstack.smtp_sink import Sink
from secmsg.notify.adapters.mongo import MongoRelayChooser
from secmsg.notify.adapters.smtp import SmtpMailer
from secmsg.notify.ports import SmtpTarget, SmtpUnavailable, TargetBusy
from secmsg.shared import mongo
from secmsg.shared import smtp_reasons as reasons
from secmsg.shared.smtp_reasons import classify
from secmsg.shared.ssrf import TargetRefused
from tests.notify.conftest import Bus, eventually, stored_event

MSG = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.mark.parametrize(("exc", "word"), [
    (aiosmtplib.SMTPResponseException(451, "4.3.0 <secret@x> greylisted"), "temporary_rejection"),
    (aiosmtplib.SMTPResponseException(550, "no such user"), "permanent_rejection"),
    (aiosmtplib.SMTPAuthenticationError(535, "bad"), "auth_failed"),
    (aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."),
     "tls_unavailable"),
    (ssl.SSLCertVerificationError("certificate verify failed"), "tls_failed"),
    (aiosmtplib.SMTPConnectTimeoutError("slow"), "timeout"),
    (aiosmtplib.SMTPServerDisconnected("gone"), "connection_lost"),
    (ConnectionRefusedError(111, "refused"), "connection_refused"),
    (TargetRefused("no"), "blocked_target"),
])
def test_classify_gives_only_fixed_words(exc: BaseException, word: str) -> None:
    assert classify(exc) == word and word in reasons.REASONS


async def test_refused_port_is_connection_refused() -> None:
    m = SmtpMailer()
    try:
        with pytest.raises(SmtpUnavailable) as info:
            await m.send(SmtpTarget(host="127.0.0.1", port=free_port(), timeout_s=2),
                         envelope_from="a@example.com", recipient="b@example.com", message=MSG)
        assert info.value.reason == "connection_refused"
    finally:
        await m.aclose()


@pytest.fixture
async def mailer() -> AsyncIterator[SmtpMailer]:
    m = SmtpMailer(pool_size=2, rate_per_s=50, saturated_wait_s=0.2)
    yield m
    await m.aclose()


async def test_tenant_rate_lowers_the_target_rate(mailer: SmtpMailer, sink: Sink) -> None:
    fast = SmtpTarget(host="127.0.0.1", port=sink.port, timeout_s=5)
    slow = SmtpTarget(host="localhost", port=sink.port, timeout_s=5, rate_per_s=1)

    async def send(t: SmtpTarget, rcpt: str) -> None:
        await mailer.send(t, envelope_from="a@example.com", recipient=rcpt, message=MSG)

    # 50/s: a burst of 5 is within the bucket.
    for i in range(5):
        await send(fast, f"f{i}@example.com")
    # 1/s for the tenant's own server: the second at once would wait ~1 s, more than the
    # 0.2 s a handler may wait, so it is sent back with the time until its turn.
    await send(slow, "s0@example.com")
    with pytest.raises(TargetBusy) as info:
        await send(slow, "s1@example.com")
    assert info.value.retry_in > 0.2 and info.value.reason == "timeout"
    assert len(sink.messages) == 6


async def test_hanging_tenant_never_stalls_others_in_the_worker(
        tenant: str, mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "slow", "name": "slow", "smtp": {"mode": "own", "host": "127.0.0.1",
                                                "port": port, "tls": "tls"}})
    try:
        # A long SMTP timeout: a handler that waited for the silent server would hold on
        # far longer than this test waits for the other tenant's mail.
        await start_notify(SECMSG_SMTP_TIMEOUT_S="60", SECMSG_NOTIFY_LEASE_S="90",
                           SECMSG_NOTIFY_ACK_WAIT_S="100", SECMSG_NOTIFY_CONCURRENCY="3",
                           SECMSG_NOTIFY_SMTP_POOL_SIZE="1",
                           SECMSG_NOTIFY_TARGET_MAX_WAITING="1",
                           SECMSG_NOTIFY_TARGET_SATURATED_WAIT_S="0.3",
                           SECMSG_SMTP_ALLOWED_TARGETS="127.0.0.0/8")
        for i in range(8):  # more events for the hanging target than handlers
            await nbus.publish(stored_event(to=[f"s{i}@example.org"], tenant="slow"))
        for i in range(6):
            await nbus.publish(stored_event(to=[f"ok{i}@example.org"], tenant=tenant))
        await eventually(lambda: len(sink.messages) == 6, timeout=15,
                         what="the other tenant's notifications")
        # The silent server holds one connection at most (pool size 1).
        assert len(accepted) == 1
        # Events turned away from the busy target were sent back, not recorded as deferred
        # (nothing was claimed for them).
        assert await nbus.events("notification.deferred") == []
    finally:
        for w in accepted:
            w.close()
        server.close()


async def test_standby_relay_follows_dnsbl_status(
        tenant: str, mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    standby = Sink(free_port())
    standby.start()
    try:
        await start_notify(SECMSG_NOTIFY_STANDBY_SMTP_HOST="127.0.0.1",
                           SECMSG_NOTIFY_STANDBY_SMTP_PORT=str(standby.port),
                           SECMSG_NOTIFY_RELAY_CHECK_S="0.1")
        await nbus.publish(stored_event(to=["one@example.org"]))
        await eventually(lambda: sink.handler.for_recipient("one@example.org"), what="primary")
        status = mongo_db[mongo.DNSBL_STATUS]
        await status.insert_one({"_id": "platform", "listed": True, "relay": "standby"})
        await asyncio.sleep(0.3)  # past the re-read interval (not an assertion on time)
        await nbus.publish(stored_event(to=["two@example.org"]))
        await eventually(lambda: standby.handler.for_recipient("two@example.org"),
                         what="standby")
        await status.update_one({"_id": "platform"}, {"$set": {"relay": "primary"}})
        await asyncio.sleep(0.3)
        await nbus.publish(stored_event(to=["three@example.org"]))
        await eventually(lambda: sink.handler.for_recipient("three@example.org"),
                         what="primary again")
        assert sink.handler.for_recipient("two@example.org") == []
        assert [m.rcpt_tos for m in standby.messages] == [["two@example.org"]]
    finally:
        standby.stop()


async def test_relay_status_read_at_most_every_interval(mongo_db: Any) -> None:
    now = [1000.0]
    primary = SmtpTarget(host="primary.example", port=25)
    standby = SmtpTarget(host="standby.example", port=25)
    chooser = MongoRelayChooser(mongo_db, primary=primary, standby=standby, check_s=30,
                                clock=lambda: now[0])
    assert await chooser.platform_target() is primary
    await mongo_db[mongo.DNSBL_STATUS].insert_one({"_id": "platform", "relay": "standby"})
    now[0] += 29
    assert await chooser.platform_target() is primary  # cached
    now[0] += 2
    assert await chooser.platform_target() is standby
    # No standby configured: always the primary, the document is not even read.
    assert await MongoRelayChooser(mongo_db, primary=primary,
                                   standby=None).platform_target() is primary


async def test_a_busy_but_moving_target_queues_instead_of_sending_events_back(
        sink: Sink) -> None:
    """A backlog for one healthy relay is worked through by queueing for its connections, not
    bounced: sending back every waiter beyond a fixed count made a single relay's backlog churn
    through naks (benchmark: a tenth of the throughput)."""
    sink.handler.faults.mode, sink.handler.faults.hang_seconds = "hang", 0.1  # slow, not stuck
    m = SmtpMailer(pool_size=1, saturated_wait_s=0.5)  # the default queue length
    target = SmtpTarget(host="127.0.0.1", port=sink.port, timeout_s=5)
    try:
        # 12 sends queue on one connection for ~1.2 s in all, longer than saturated_wait_s,
        # but the connection frees up every 0.1 s: none is refused as busy.
        await asyncio.gather(*(m.send(target, envelope_from="a@example.com",
                                      recipient=f"q{i}@example.com", message=MSG)
                               for i in range(12)))
        assert len(sink.messages) == 12
    finally:
        sink.handler.faults.mode = "ok"
        await m.aclose()


async def test_a_stalled_target_sends_new_arrivals_back(sink: Sink) -> None:
    sink.handler.faults.mode, sink.handler.faults.hang_seconds = "hang", 5.0  # stuck
    m = SmtpMailer(pool_size=1, saturated_wait_s=0.3, max_waiting=64)
    target = SmtpTarget(host="127.0.0.1", port=sink.port, timeout_s=10)
    try:
        first = asyncio.create_task(m.send(target, envelope_from="a@example.com",
                                           recipient="stuck@example.com", message=MSG))
        await asyncio.sleep(0.1)
        with pytest.raises(TargetBusy):  # waited 0.3 s with no slot freed: gives up
            await m.send(target, envelope_from="a@example.com", recipient="w@example.com",
                         message=MSG)
        with pytest.raises(TargetBusy):  # stalled now: refused at once
            await m.send(target, envelope_from="a@example.com", recipient="x@example.com",
                         message=MSG)
        first.cancel()
    finally:
        sink.handler.faults.mode = "ok"
        await m.aclose()
