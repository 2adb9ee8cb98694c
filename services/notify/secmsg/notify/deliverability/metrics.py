"""Prometheus metrics of the deliverability process (label values are bounded: outcomes,
the operator's own targets and zones -- never recipient addresses or message ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

BOUNCES = Counter(
    "secmsg_bounces_total",
    "Mail received by the bounce receiver, by outcome: hard / soft (published), not_dsn "
    "(a reply or auto-reply, dropped), malformed, unmatched (no notification matches, or a "
    "forged tag: dropped), not_bounce (delivered/relayed/expanded reports), retry (answered "
    "451: the event bus or database was unavailable)",
    ["outcome"])
DNSBL_LISTED = Gauge(
    "secmsg_dnsbl_listed", "1 while the target is listed by the zone, else 0",
    ["target", "zone"])
DNSBL_LAST_CHECK = Gauge(
    "secmsg_dnsbl_last_check_timestamp_seconds", "Unix time of the last completed DNSBL check")
DNSBL_UNKNOWN = Gauge(
    "secmsg_dnsbl_unknown", "1 when the last lookup of the target in the zone gave no answer "
    "(timeout, resolver error, or the zone's 127.255.255.x refusal codes)", ["target", "zone"])
DNSBL_LOOKUP_FAILURES_TOTAL = Counter(
    "secmsg_dnsbl_lookup_failures_total", "Lookups without a usable answer, by zone and kind",
    ["zone", "kind"])
DNSBL_STANDBY = Gauge(
    "secmsg_dnsbl_relay_standby", "1 while dnsbl_status.relay is standby")
