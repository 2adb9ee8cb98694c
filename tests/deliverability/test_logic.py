"""The parsing and decision logic with in-memory fakes (no servers): DSN corner cases, DNSBL
answers, and the relay switch counted check by check."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import pytest

from secmsg.notify.deliverability.dnsbl import (
    MonitorPolicy,
    Target,
    check_once,
    interpret,
    ip_query,
    targets,
)
from secmsg.notify.deliverability.dsn import MalformedReport, parse_report
from secmsg.notify.deliverability.ports import DnsblStatus, Lookup
from secmsg.notify.deliverability.settings import DeliverabilitySettings


def test_encoded_delivery_status_part_and_status_comments() -> None:
    fields = (b"Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: RFC822; <Bob@Example.ORG>\r\n"
              b"Action: Failed\r\nStatus: 5.7.1 (delivery not authorized)\r\n")
    raw = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(fields)
           + b"\r\n--b--\r\n")
    report = parse_report(raw)
    assert report is not None
    [rcpt] = report.recipients
    assert (rcpt.final_recipient, rcpt.action, rcpt.status) == ("bob@example.org", "failed",
                                                                "5.7.1")


def test_not_a_report_and_a_report_without_recipients() -> None:
    assert parse_report(b"Subject: hello\r\n\r\nOut of office\r\n") is None
    with pytest.raises(MalformedReport):
        parse_report(b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n")


def test_query_names_and_answers() -> None:
    assert ip_query("192.0.2.1", "zen.example") == "1.2.0.192.zen.example"
    v6 = ip_query("2001:db8::1", "zen.example")
    assert v6.endswith(".8.b.d.0.1.0.0.2.zen.example") and v6.count(".") == 33
    t = Target("192.0.2.1", "zen.example", "1.2.0.192.zen.example")
    assert interpret(t, Lookup("answer", ("127.0.0.4", "127.0.0.2"))).answer == \
        "127.0.0.2,127.0.0.4"
    assert interpret(t, Lookup("answer", ("127.255.255.254",))).state == "unknown"
    assert interpret(t, Lookup("answer", ("203.0.113.7",))).state == "unknown"
    assert interpret(t, Lookup("nxdomain")).state == "clean"
    assert interpret(t, Lookup("timeout")).state == "unknown"


def test_settings_refuse_bad_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECMSG_NOTIFY_DNSBL_IPS", "192.0.2.1, not-an-ip")
    with pytest.raises(ValueError, match="not-an-ip"):
        DeliverabilitySettings()
    monkeypatch.setenv("SECMSG_NOTIFY_DNSBL_IPS", "192.0.2.1")
    monkeypatch.setenv("SECMSG_NOTIFY_BOUNCE_ADDRESS", "bounces+x@notify.example")
    with pytest.raises(ValueError, match="BOUNCE_ADDRESS"):
        DeliverabilitySettings()


class FakeResolver:
    def __init__(self) -> None:
        self.answers: dict[str, Lookup] = {}

    async def lookup_a(self, name: str) -> Lookup:
        return self.answers.get(name, Lookup("nxdomain"))


class MemoryRepo:
    def __init__(self) -> None:
        self.doc: DnsblStatus | None = None

    async def load(self) -> DnsblStatus | None:
        return self.doc

    async def save(self, status: DnsblStatus) -> None:
        self.doc = status


async def test_relay_switches_on_listing_and_back_after_exactly_n_clean_checks(
        caplog: pytest.LogCaptureFixture) -> None:
    checks = targets(ips=["192.0.2.9"], ip_zones=["bl.test"], domains=["d.example"],
                     domain_zones=["dbl.test"])
    resolver, repo = FakeResolver(), MemoryRepo()
    policy = MonitorPolicy(clear_checks=3, standby_possible=True)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    resolver.answers["9.2.0.192.bl.test"] = Lookup("answer", ("127.0.0.2",))
    streak = 0
    caplog.set_level(logging.INFO, logger="secmsg.notify.deliverability")
    for i in range(2):
        status, streak = await check_once(checks=checks, resolver=resolver, repo=repo,
                                          policy=policy, clean_streak=streak,
                                          now=t0 + timedelta(minutes=i))
        assert (status.relay, status.switched_at, streak) == ("standby", t0, 0)
    assert [r.getMessage() for r in caplog.records
            if getattr(r, "alert", None) == "dnsbl_listed"] == [
        "DNSBL listing: 192.0.2.9 is listed by bl.test (answer 127.0.0.2)"]

    # No answer is not a delisting: the listing is kept, and the streak stays at zero.
    resolver.answers["9.2.0.192.bl.test"] = Lookup("timeout")
    status, streak = await check_once(checks=checks, resolver=resolver, repo=repo,
                                      policy=policy, clean_streak=streak)
    assert status.listed and status.relay == "standby" and streak == 0

    del resolver.answers["9.2.0.192.bl.test"]
    relays = []
    for _ in range(3):
        status, streak = await check_once(checks=checks, resolver=resolver, repo=repo,
                                          policy=policy, clean_streak=streak)
        relays.append((status.listed, status.relay))
    assert relays == [(False, "standby"), (False, "standby"), (False, "primary")]

    # An unknown in the middle of the clean run starts the count again.
    resolver.answers["9.2.0.192.bl.test"] = Lookup("answer", ("127.0.0.3",))
    status, streak = await check_once(checks=checks, resolver=resolver, repo=repo,
                                      policy=policy, clean_streak=streak)
    assert status.relay == "standby"
    seq = []
    for answer in (None, Lookup("error"), None, None, None):
        resolver.answers.pop("9.2.0.192.bl.test", None)
        if answer is not None:
            resolver.answers["d.example.dbl.test"] = answer
        else:
            resolver.answers.pop("d.example.dbl.test", None)
        status, streak = await check_once(checks=checks, resolver=resolver, repo=repo,
                                          policy=policy, clean_streak=streak)
        seq.append(status.relay)
    assert seq == ["standby", "standby", "standby", "standby", "primary"]


async def test_without_auto_standby_a_listing_only_alerts() -> None:
    checks = targets(ips=["192.0.2.9"], ip_zones=["bl.test"], domains=[], domain_zones=[])
    resolver, repo = FakeResolver(), MemoryRepo()
    resolver.answers["9.2.0.192.bl.test"] = Lookup("answer", ("127.0.0.2",))
    status, _ = await check_once(checks=checks, resolver=resolver, repo=repo,
                                 policy=MonitorPolicy(clear_checks=3, standby_possible=False),
                                 clean_streak=0)
    assert status.listed and status.relay == "primary" and status.switched_at is None
