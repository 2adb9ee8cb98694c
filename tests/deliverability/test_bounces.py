"""The bounce receiver as a real process: real DSNs over SMTP, events read back from NATS."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devstack.servers import Server
from secmsg.shared import mongo
from tests.deliverability.conftest import (
    BOUNCE_BASE,
    TENANT,
    bounced_events,
    exchange_dsn,
    gmail_dsn,
    new_message_id,
    plain_mail,
    postfix_dsn,
    send,
    tagged,
)
from tests.notify.conftest import eventually

pytestmark = pytest.mark.timeout(90)


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_reports_shaped_like_real_mtas_become_bounce_events(
        start_deliverability: Any, nc: Any, mongo_db: Any) -> None:
    proc = start_deliverability()
    hard, soft, gmail, exch = (new_message_id() for _ in range(4))

    # Postfix, tagged, 5.1.1: hard.
    to = tagged(hard, "Bob@Example.org")
    assert await send(proc.bounce_port, [to], postfix_dsn(
        to=to, message_id=hard, recipients=[("bob@example.org", "failed", "5.1.1")])
    ) == ([250], 250)
    # Exchange "delayed" 4.4.7, tagged, address reported in upper case: soft.
    to = tagged(soft, "carol@example.org")
    assert await send(proc.bounce_port, [to], exchange_dsn(
        to=to, message_id=soft, address="carol@example.org", action="delayed", status="4.4.7")
    ) == ([250], 250)
    # Gmail, tagged: hard.
    to = tagged(gmail, "dave@gmail.example")
    assert (await send(proc.bounce_port, [to], gmail_dsn(
        to=to, message_id=gmail, address="dave@gmail.example")))[1] == 250
    # Exchange failed 5.1.10 that lost its tag (plain bounce address): matched through the
    # quoted X-Secure-Message-Id and the stored message's recipients.
    await mongo_db[mongo.MESSAGES].insert_one({
        "_id": exch, "tenant_id": TENANT, "recipient_addresses": ["erin@example.org",
                                                                  "frank@example.org"],
        "received_at": datetime.now(UTC)})
    assert (await send(proc.bounce_port, [BOUNCE_BASE], exchange_dsn(
        to=BOUNCE_BASE, message_id=exch, address="erin@example.org")))[1] == 250
    # One untagged Postfix report for two recipients of that message, one delivered (ignored).
    assert (await send(proc.bounce_port, [BOUNCE_BASE], postfix_dsn(
        to=BOUNCE_BASE, message_id=exch, recipients=[
            ("erin@example.org", "failed", "5.2.2"), ("frank@example.org", "failed", "5.1.1"),
            ("grace@example.org", "delivered", "2.0.0")])))[1] == 250

    got = {(e.message_id, e.recipient, e.status, e.hard, e.reason)
           for e in await bounced_events(nc)}
    assert got == {
        (hard, "bob@example.org", "5.1.1", True, "bounced_hard"),
        (soft, "carol@example.org", "4.4.7", False, "bounced_soft"),
        (gmail, "dave@gmail.example", "5.1.1", True, "bounced_hard"),
        (exch, "erin@example.org", "5.1.10", True, "bounced_hard"),
        (exch, "erin@example.org", "5.2.2", True, "bounced_hard"),
        (exch, "frank@example.org", "5.1.1", True, "bounced_hard"),
    }
    assert all(e.tenant_id == TENANT for e in await bounced_events(nc))

    # The same report again (a relay retrying after a lost 250): same Nats-Msg-Id, dropped.
    to = tagged(hard, "bob@example.org")
    assert (await send(proc.bounce_port, [to], postfix_dsn(
        to=to, message_id=hard, recipients=[("bob@example.org", "failed", "5.1.1")])))[1] == 250
    assert len(await bounced_events(nc)) == 6


async def test_forged_unmatched_and_non_reports_are_accepted_and_dropped(
        start_deliverability: Any, nc: Any, mongo_db: Any) -> None:
    proc = start_deliverability(SECMSG_NOTIFY_BOUNCE_MAX_BYTES=100_000)
    mid = new_message_id()
    # Not our address: refused at RCPT, and so is another domain with our local part.
    assert await send(proc.bounce_port, ["postmaster@notify.example",
                                         "bounces@elsewhere.example"], b"x") == ([550, 550], None)
    # A tag for bob, a report about mallory: the hash does not match, nothing published.
    to = tagged(mid, "bob@example.org")
    assert (await send(proc.bounce_port, [to], postfix_dsn(
        to=to, message_id=mid, recipients=[("mallory@example.org", "failed", "5.1.1")])
    ))[1] == 250
    # A tag for bob; the report names bob and mallory: only bob's bounce counts.
    assert (await send(proc.bounce_port, [to], postfix_dsn(
        to=to, message_id=mid, recipients=[("mallory@example.org", "failed", "5.1.1"),
                                           ("bob@example.org", "failed", "4.2.2")])))[1] == 250
    # Untagged, quoting a message that does not exist / a recipient it was not sent to.
    assert (await send(proc.bounce_port, [BOUNCE_BASE], postfix_dsn(
        to=BOUNCE_BASE, message_id=new_message_id(),
        recipients=[("bob@example.org", "failed", "5.1.1")])))[1] == 250
    await mongo_db[mongo.MESSAGES].insert_one({"_id": mid, "tenant_id": "other",
                                               "recipient_addresses": ["bob@example.org"]})
    # The quoted link names tenant acme, the stored message belongs to "other": forged.
    assert (await send(proc.bounce_port, [BOUNCE_BASE], postfix_dsn(
        to=BOUNCE_BASE, message_id=mid, recipients=[("bob@example.org", "failed", "5.1.1")])
    ))[1] == 250
    # Replies, auto-replies, a report without recipient blocks, garbage.
    for data in (plain_mail(to), plain_mail(to, auto_reply=True),
                 b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n"
                 b"\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n"
                 b"Reporting-MTA: dns; x\r\n\r\n--x--\r\n",
                 b"\x00\xff\xfe not mail at all"):
        assert (await send(proc.bounce_port, [to], data))[1] == 250
    # Over SECMSG_NOTIFY_BOUNCE_MAX_BYTES (lowered below): 552.
    big = plain_mail(to) + b"x" * 70 + b"\r\n"
    assert (await send(proc.bounce_port, [to], big * 2000))[1] == 552

    events = await bounced_events(nc)
    assert [(e.recipient, e.status, e.hard, e.reason) for e in events] == [
        ("bob@example.org", "4.2.2", False, "bounced_soft")]

    async with httpx.AsyncClient(base_url=proc.base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, "secmsg_bounces_total", outcome="unmatched") == 4
    assert metric(text, "secmsg_bounces_total", outcome="not_dsn") == 3
    assert metric(text, "secmsg_bounces_total", outcome="malformed") == 1
    assert metric(text, "secmsg_bounces_total", outcome="soft") == 1
    # Nothing internal leaked into the log: no addresses.
    logged = proc.svc.log_path.read_text()
    assert "mallory" not in logged and "bob@" not in logged
    assert "Traceback" not in logged


async def test_451_while_nats_is_down_then_250_and_clean_sigterm(
        start_deliverability: Any, nc: Any, nats_server: Server) -> None:
    proc = start_deliverability()
    mid = new_message_id()
    to = tagged(mid, "bob@example.org")
    report = postfix_dsn(to=to, message_id=mid, recipients=[("bob@example.org", "failed",
                                                              "5.1.1")])
    async with httpx.AsyncClient(base_url=proc.base_url, timeout=5) as http:
        assert (await http.get("/readyz")).status_code == 200
        await nc.close()
        nats_server.stop()
        assert (await send(proc.bounce_port, [to], report))[1] == 451
        r = await eventually(lambda: _readyz(http, 503), what="/readyz 503 without NATS")
        assert "nats" in r.json()["reasons"]
        nats_server.start()
        await eventually(lambda: _readyz(http, 200), what="/readyz 200 again")
        assert (await send(proc.bounce_port, [to], report))[1] == 250
        text = (await http.get("/metrics")).text
        assert metric(text, "secmsg_bounces_total", outcome="retry") == 1

    from secmsg.shared import bus
    from secmsg.shared.settings import CommonSettings
    client = await bus.connect(CommonSettings().nats_url, "deliverability-tests-2")
    try:
        events = await bounced_events(client)
    finally:
        await client.close()
    assert [(e.message_id, e.recipient, e.hard) for e in events] == [
        (mid, "bob@example.org", True)]
    assert proc.svc.stop() == 0, proc.svc.tail()
    assert any(line.get("event") == "shutdown" for line in proc.log_lines())


async def _readyz(http: httpx.AsyncClient, status: int) -> httpx.Response | None:
    try:
        r = await http.get("/readyz")
    except httpx.HTTPError:
        return None
    return r if r.status_code == status else None
