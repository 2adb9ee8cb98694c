"""The DNSBL monitor as a real process against a loopback authoritative DNS server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from secmsg.notify.deliverability.dnsbl import ip_query
from secmsg.shared import mongo
from tests.deliverability.conftest import DnsZone
from tests.deliverability.test_bounces import metric
from tests.notify.conftest import eventually

pytestmark = pytest.mark.timeout(90)

LISTED_IP, CLEAN_IP = "192.0.2.1", "2001:db8::1"


async def test_listing_alerts_switches_to_standby_and_back(
        start_deliverability: Any, dns_zone: DnsZone, mongo_db: Any) -> None:
    z = dns_zone
    ip_name = ip_query(LISTED_IP, "bl.test")
    assert ip_name == "1.2.0.192.bl.test"
    v6_name = ip_query(CLEAN_IP, "bl.test")
    z.records[ip_name] = "127.0.0.2"
    z.records["bad.example.dbl.test"] = "127.0.1.2"
    z.records[v6_name] = "127.255.255.254"  # the zone refusing the query: not a listing
    z.silent.add("good.example.dbl.test")  # no answer: unknown
    proc = start_deliverability(
        SECMSG_NOTIFY_DNSBL_IPS=f"{LISTED_IP},{CLEAN_IP}", SECMSG_NOTIFY_DNSBL_ZONES="bl.test",
        SECMSG_NOTIFY_DNSBL_DOMAINS="bad.example,good.example",
        SECMSG_NOTIFY_DNSBL_DOMAIN_ZONES="dbl.test",
        SECMSG_NOTIFY_DNSBL_NAMESERVER=f"127.0.0.1:{z.port}",
        SECMSG_NOTIFY_DNSBL_INTERVAL_S="0.2", SECMSG_NOTIFY_DNSBL_TIMEOUT_S="0.3",
        SECMSG_NOTIFY_DNSBL_AUTO_STANDBY="true",
        SECMSG_NOTIFY_STANDBY_SMTP_HOST="standby.example", SECMSG_NOTIFY_DNSBL_CLEAR_CHECKS="3")
    status = mongo_db[mongo.DNSBL_STATUS]

    doc = await eventually(lambda: status.find_one({"_id": "platform", "relay": "standby"}),
                           what="relay switched to standby")
    assert doc["listed"] is True
    assert {(x["target"], x["zone"], x["answer"]) for x in doc["listings"]} == {
        (LISTED_IP, "bl.test", "127.0.0.2"), ("bad.example", "dbl.test", "127.0.1.2")}
    assert doc["switched_at"] is not None and doc["checked_at"] >= doc["switched_at"]
    # The IPv6 target was asked for by nibbles, and the silent name really went unanswered.
    assert v6_name.startswith("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.")
    await eventually(lambda: z.queries.count(ip_name) >= 3, what="three checks")

    async with httpx.AsyncClient(base_url=proc.base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, "secmsg_dnsbl_listed", target=LISTED_IP, zone="bl.test") == 1
    assert metric(text, "secmsg_dnsbl_listed", target="bad.example", zone="dbl.test") == 1
    assert metric(text, "secmsg_dnsbl_unknown", target=CLEAN_IP, zone="bl.test") == 1
    assert metric(text, "secmsg_dnsbl_unknown", target="good.example", zone="dbl.test") == 1
    assert metric(text, "secmsg_dnsbl_last_check_timestamp_seconds") > 0
    assert metric(text, "secmsg_dnsbl_relay_standby") == 1
    # One alert per new listing, however many checks saw it; refusals and timeouts are not.
    lines = proc.log_lines()
    alerts = [x for x in lines if x.get("alert") == "dnsbl_listed"]
    assert sorted((x["target"], x["zone"], x["level"]) for x in alerts) == [
        (LISTED_IP, "bl.test", "error"), ("bad.example", "dbl.test", "error")]
    assert {(x["target"], x["zone"]) for x in lines if x.get("event") == "dnsbl_unknown"} == {
        (CLEAN_IP, "bl.test"), ("good.example", "dbl.test")}

    # Delisted and answering again: back to primary after the clean checks.
    z.silent.clear()
    z.records.clear()
    doc = await eventually(lambda: status.find_one({"_id": "platform", "relay": "primary"}),
                           what="relay back to primary")
    assert doc["listed"] is False and doc["listings"] == []
    async with httpx.AsyncClient(base_url=proc.base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, "secmsg_dnsbl_listed", target=LISTED_IP, zone="bl.test") == 0
    assert metric(text, "secmsg_dnsbl_relay_standby") == 0
    assert proc.svc.stop() == 0, proc.svc.tail()


async def test_no_targets_leaves_the_monitor_idle(start_deliverability: Any,
                                                  mongo_db: Any) -> None:
    proc = start_deliverability()
    await eventually(lambda: any(x.get("event") == "dnsbl_idle" for x in proc.log_lines()),
                     what="idle logged")
    assert await mongo_db[mongo.DNSBL_STATUS].find_one({"_id": "platform"}) is None
