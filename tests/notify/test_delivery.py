"""notify in-process against real NATS (events and the claims KV bucket), FerretDB and the
aiosmtpd sink."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import free_port
from devstack.smtp_sink import Faults, Sink
from secmsg.notify.metrics import NOTIFICATIONS
from tests.consumers import settled
from tests.notify.conftest import (
    DISCLAIMER,
    FOOTER,
    Bus,
    all_claims,
    claim_key,
    eventually,
    fix_sink_drop,
    read_claim,
    stored_event,
    write_claim,
)

pytestmark = pytest.mark.timeout(60)


def kinds(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.kind == kind]


async def test_one_mail_per_recipient_with_headers_body_and_markers(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    await start_notify()
    ev = stored_event(to=["bob@example.org", "Carol@Example.org"],
                      cc=["dave@example.net", "carol@example.org"],  # carol twice: one mail
                      subject="Quarterly results (confidential)")
    await nbus.publish(ev)
    rcpts = ["bob@example.org", "carol@example.org", "dave@example.net"]
    await eventually(lambda: all(sink.handler.for_recipient(r) for r in rcpts),
                     what="a mail to every recipient")
    sent = await eventually(lambda: _n_events(nbus, "notification.sent", 3),
                            what="three notification.sent events")
    assert sorted(e.recipient.lower() for e in sent) == rcpts
    assert len(sink.messages) == 3
    url = f"https://127.0.0.1:8443/m/{tenant}/{ev.message_id}"
    for r in rcpts:
        [cap] = sink.handler.for_recipient(r)
        assert [x.lower() for x in cap.rcpt_tos] == [r]  # envelope: only this recipient
        msg = cap.message
        assert msg["Subject"] == "Quarterly results (confidential)"
        assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org",
                                                              "Carol@Example.org"]
        assert [a.addr_spec for a in msg["Cc"].addresses] == ["dave@example.net",
                                                              "carol@example.org"]
        assert msg["Reply-To"].addresses[0].addr_spec == "alice@acme.example"
        assert "alice@acme.example via Acme Medical" in str(msg["From"])
        assert msg["X-Secure-Message-Id"] == ev.message_id
        assert msg["X-Secure-Message-Url"] == url
        for part in ("plain", "html"):
            body = msg.get_body((part,)).get_content()
            assert url in body
            assert DISCLAIMER in body
            assert "Please do not forward." in body
        assert FOOTER in msg.get_body(("plain",)).get_content()
        assert f"Secure-Message-Id: {ev.message_id}" in msg.get_body(("plain",)).get_content()
    ids = {cap.message["Message-ID"] for cap in sink.messages}
    assert len(ids) == 3
    claims = await all_claims(nbus.nc)
    assert sorted(claims) == sorted(claim_key(tenant, ev.message_id, r) for r in rcpts)
    assert {d["state"] for d in claims.values()} == {"sent"}
    sent_to_sink = NOTIFICATIONS.labels(tenant, "sent", f"127.0.0.1:{sink.port}")._value.get()
    assert sent_to_sink >= 3


async def _n_events(nbus: Bus, kind: str, n: int) -> list[Any]:
    events = await nbus.events(kind)
    return events if len(events) >= n else []


async def test_duplicate_event_sends_no_second_mail(tenant: str, sink: Sink, nbus: Bus,
                                                    start_notify: Any) -> None:
    await start_notify()
    ev = stored_event(to=["bob@example.org", "erin@example.org"])
    await nbus.publish(ev)
    await eventually(lambda: len(sink.messages) == 2, what="two mails")
    # The same event again (as after a crash before the ack): skipped, final events re-sent
    # to the bus and dropped there as duplicates.
    await nbus.publish(ev, copy="again")
    await nbus.publish(ev, copy="third")
    sent = await eventually(lambda: _n_events(nbus, "notification.sent", 2), what="sent events")
    # Both copies handed to notify and acknowledged: a mail they caused would be in by now.
    await eventually(lambda: settled(nbus.nc), what="the copies handled")
    assert len(sink.messages) == 2
    assert len(await nbus.events("notification.sent")) == len(sent) == 2


async def test_tempfail_twice_then_success_is_delivered_once(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    await start_notify()
    sink.handler.faults = Faults(mode="tempfail", count=2)
    ev = stored_event(to=["bob@example.org"])
    await nbus.publish(ev)
    await eventually(lambda: sink.handler.for_recipient("bob@example.org"), what="the mail")
    await eventually(lambda: _n_events(nbus, "notification.sent", 1), what="sent event")
    deferred = await nbus.events("notification.deferred")
    assert [e.attempt for e in deferred] == [1, 2]
    assert all(e.reason == "temporary_rejection" for e in deferred)
    assert len(sink.messages) == 1
    doc = await read_claim(nbus.nc, tenant, ev.message_id, "bob@example.org")
    assert doc is not None and doc["state"] == "sent" and doc["attempts"] == 3


async def test_permanent_failure_fails_at_once_without_retry(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    await start_notify()
    sink.handler.faults = Faults(mode="permfail", count=None)
    ev = stored_event(to=["bob@example.org"])
    await nbus.publish(ev)
    [failed] = await eventually(lambda: nbus.events("notification.failed"), what="failed event")
    assert failed.recipient == "bob@example.org" and failed.reason == "permanent_rejection"
    # The event acknowledged and no retry waiting: a retry would have been scheduled first.
    await eventually(lambda: settled(nbus.nc), what="the event handled")
    doc = await read_claim(nbus.nc, tenant, ev.message_id, "bob@example.org")
    assert doc is not None and doc["state"] == "failed" and doc["attempts"] == 1
    assert await nbus.events("notification.deferred") == []
    assert sink.messages == []


async def test_connection_dropped_mid_data_is_retried_and_delivered_once(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fix_sink_drop(sink, monkeypatch)
    await start_notify()
    sink.handler.faults = Faults(mode="drop", count=1)
    ev = stored_event(to=["bob@example.org", "carol@example.org"])
    await nbus.publish(ev)
    await eventually(lambda: len(sink.messages) == 2, what="both mails")
    await eventually(lambda: _n_events(nbus, "notification.sent", 2), what="sent events")
    assert len(await nbus.events("notification.deferred")) >= 1
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == ["bob@example.org",
                                                                    "carol@example.org"]


async def test_gives_up_after_the_configured_time(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any, mongo_db: Any) -> None:
    await start_notify(SECMSG_NOTIFY_GIVE_UP_AFTER_S="3600")
    sink.handler.faults = Faults(mode="tempfail", count=None)
    fresh = stored_event(to=["fresh@example.org"])
    old = stored_event(to=["old@example.org"],
                       received_at=datetime.now(UTC) - timedelta(hours=2))
    await nbus.publish(old)
    await nbus.publish(fresh)
    [failed] = await eventually(lambda: nbus.events("notification.failed"), what="give-up")
    assert failed.recipient == "old@example.org" and failed.reason == "gave_up"
    # The fresh one keeps being deferred, never failed.
    await eventually(lambda: _n_events(nbus, "notification.deferred", 2), what="deferrals")
    assert {e.recipient for e in await nbus.events("notification.deferred")} == {
        "fresh@example.org"}
    assert len(await nbus.events("notification.failed")) == 1
    sink.handler.faults = Faults()
    await eventually(lambda: sink.handler.for_recipient("fresh@example.org"), what="delivery")
    assert sink.handler.for_recipient("old@example.org") == []


async def test_line_break_in_subject_fails_without_injection(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any, mongo_db: Any) -> None:
    await start_notify()
    ev = stored_event(to=["bob@example.org"], subject="Hi\r\nBcc: evil@attacker.example")
    ok = stored_event(to=["carol@example.org"])
    await nbus.publish(ev)
    await nbus.publish(ok)
    [failed] = await eventually(lambda: nbus.events("notification.failed"), what="failed event")
    assert failed.message_id == ev.message_id and failed.reason == "invalid_message"
    await eventually(lambda: sink.handler.for_recipient("carol@example.org"), what="other mail")
    assert sink.handler.for_recipient("bob@example.org") == []
    assert all(b"evil@attacker.example" not in m.data for m in sink.messages)


async def test_connections_are_reused(tenant: str, sink: Sink, nbus: Bus,
                                      start_notify: Any) -> None:
    await start_notify(SECMSG_NOTIFY_SMTP_POOL_SIZE="2")
    for i in range(20):
        await nbus.publish(stored_event(to=[f"r{i}@example.org"]))
    await eventually(lambda: len(sink.messages) == 20, what="20 mails")
    assert 1 <= sink.handler.connections <= 2


async def test_idle_connection_closed_by_server_is_replaced(
        tenant: str, nbus: Bus, start_notify: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    short = Sink(free_port(), tmp_path / "short", timeout=0.5)  # closes idle sessions fast
    short.start()
    try:
        await start_notify(SECMSG_SMTP_PORT=str(short.port))
        await nbus.publish(stored_event(to=["first@example.org"]))
        await eventually(lambda: len(short.messages) == 1, what="first mail")
        await asyncio.sleep(1.2)  # the server drops the pooled connection meanwhile
        await nbus.publish(stored_event(to=["second@example.org"]))
        await eventually(lambda: len(short.messages) == 2, what="second mail")
        assert await nbus.events("notification.deferred") == []
        assert short.handler.connections == 2
    finally:
        short.stop()


async def test_unknown_tenant_still_notified_with_defaults(sink: Sink, nbus: Bus,
                                                           start_notify: Any) -> None:
    await start_notify()
    ev = stored_event(to=["bob@example.org"], tenant="nobody")
    await nbus.publish(ev)
    [cap] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             what="mail")
    assert "via nobody" in str(cap.message["From"])


async def test_recipient_held_by_a_live_lease_waits_for_it_then_is_sent_once(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    ev = stored_event(to=["bob@example.org", "carol@example.org"])
    # Another (dead) worker's claim on bob, valid for 2 more seconds.
    held_until = datetime.now(UTC) + timedelta(seconds=2)
    await write_claim(nbus.nc, tenant, ev.message_id, "bob@example.org", {
        "state": "sending", "lease_until": held_until, "attempts": 1,
        "updated_at": datetime.now(UTC)})
    await start_notify()
    await nbus.publish(ev)
    await eventually(lambda: sink.handler.for_recipient("carol@example.org"), what="carol")
    assert sink.handler.for_recipient("bob@example.org") == []  # lease still live
    [bob] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             what="bob after the lease ran out")
    assert bob.received_at >= held_until.timestamp()
    doc = await read_claim(nbus.nc, tenant, ev.message_id, "bob@example.org")
    assert doc is not None and doc["state"] == "sent" and doc["attempts"] == 2
    assert len(sink.messages) == 2


async def test_a_copy_delivered_while_the_first_is_sending_settles_without_the_lease(
        tenant: str, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    """An event delivered again while this process still sends it (its ack wait ran out while
    it waited in the consumer's queue, a loaded machine): the copy finds the recipient held by
    a coroutine here. It comes back within OWNER_TTL_S, finds it sent, and the consumers
    settle -- it used to park in the retry stream for the whole lease (120 s here), which is
    what made the notify kill -9 fault test time out waiting for them under load."""
    await start_notify(SECMSG_NOTIFY_LEASE_S="120")
    # The first send takes a second (within SECMSG_SMTP_TIMEOUT_S, 2 s here).
    sink.handler.faults = Faults(mode="hang", count=1, hang_seconds=1.0)
    ev = stored_event(to=["bob@example.org"])
    await nbus.publish(ev)

    async def sending() -> bool:
        doc = await read_claim(nbus.nc, tenant, ev.message_id, "bob@example.org")
        return doc is not None and doc["state"] == "sending"

    await eventually(sending, what="the first copy sending")
    await nbus.publish(ev, copy="redelivered")
    await eventually(lambda: sink.handler.for_recipient("bob@example.org"), what="the mail")
    # Well below the 120 s lease: the copy was looked at again after ~OWNER_TTL_S (5 s).
    await eventually(lambda: settled(nbus.nc), timeout=30, what="notify's consumers settled")
    assert len(sink.handler.for_recipient("bob@example.org")) == 1
    doc = await read_claim(nbus.nc, tenant, ev.message_id, "bob@example.org")
    assert doc is not None and doc["state"] == "sent"
