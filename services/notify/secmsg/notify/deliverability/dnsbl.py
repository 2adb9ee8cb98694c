"""The DNSBL monitor's logic: is a sending IP or domain on a blocklist, and which relay should
the notify workers use.

A lookup of ``<reversed ip>.<zone>`` (or ``<domain>.<zone>``) answering an A record in
127.0.0.0/8 means listed; NXDOMAIN means clean. 127.255.255.x answers are the zones' "query
refused / error" codes (Spamhaus answers them to queries through large public resolvers), a
timeout or resolver error is "unknown": logged and counted, never an alert, and a target that
was listed before stays listed until a real answer says otherwise.

The ``dnsbl_status`` document is the monitor's state: the previous listings (to alert only on
a new one) and the relay. Switching back from ``standby`` needs ``clear_checks`` consecutive
checks in which every lookup answered clean; that count lives in memory, so a restart starts
it again (waiting longer, never switching back too early).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from secmsg.notify.deliverability import metrics
from secmsg.notify.deliverability.ports import (
    BlocklistResolver,
    DnsblStatus,
    Listing,
    Lookup,
    StatusRepo,
)
from secmsg.shared.events import utcnow

log = logging.getLogger(__name__)

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")

State = Literal["listed", "clean", "unknown"]


@dataclass(frozen=True)
class Target:
    target: str  # an IP or a domain, as configured
    zone: str
    query: str  # the name looked up


@dataclass(frozen=True)
class Result:
    target: Target
    state: State
    answer: str | None = None
    why: str | None = None  # for unknown: timeout, error, refused, unexpected


@dataclass(frozen=True)
class MonitorPolicy:
    clear_checks: int
    standby_possible: bool  # SECMSG_NOTIFY_DNSBL_AUTO_STANDBY and a standby host


def ip_query(ip: str, zone: str) -> str:
    """``1.2.3.4`` -> ``4.3.2.1.<zone>``; IPv6 -> its 32 nibbles reversed, dot-separated."""
    pointer = ipaddress.ip_address(ip).reverse_pointer  # "...in-addr.arpa" / "...ip6.arpa"
    return pointer.rsplit(".", 2)[0] + "." + zone


def targets(*, ips: Sequence[str], ip_zones: Sequence[str], domains: Sequence[str],
            domain_zones: Sequence[str]) -> list[Target]:
    return ([Target(ip, z, ip_query(ip, z)) for ip in ips for z in ip_zones]
            + [Target(d, z, f"{d}.{z}") for d in domains for z in domain_zones])


def interpret(target: Target, lookup: Lookup) -> Result:
    if lookup.kind == "nxdomain":
        return Result(target, "clean")
    if lookup.kind != "answer":
        return Result(target, "unknown", why=lookup.kind)
    addrs = []
    for a in lookup.addresses:
        try:
            addrs.append(ipaddress.ip_address(a))
        except ValueError:
            continue
    listed = sorted(str(a) for a in addrs if a in _LOOPBACK and a not in _ERROR_CODES)
    if listed:
        return Result(target, "listed", answer=",".join(listed))
    refused = sorted(str(a) for a in addrs if a in _ERROR_CODES)
    if refused:
        return Result(target, "unknown", answer=",".join(refused), why="refused")
    # Outside 127/8: a resolver that rewrites NXDOMAIN, or a zone that no longer exists.
    return Result(target, "unknown", why="unexpected")


async def check_once(*, checks: Sequence[Target], resolver: BlocklistResolver,
                     repo: StatusRepo, policy: MonitorPolicy, clean_streak: int,
                     now: datetime | None = None) -> tuple[DnsblStatus, int]:
    """One round over every target and zone; writes and returns the new status and the new
    count of consecutive all-clean checks."""
    lookups = await asyncio.gather(*(resolver.lookup_a(t.query) for t in checks))
    results = [interpret(t, lk) for t, lk in zip(checks, lookups, strict=True)]
    now = now or utcnow()
    previous = await repo.load()
    before = {(x.target, x.zone): x for x in (previous.listings if previous else ())}

    listings: list[Listing] = []
    unknown = 0
    for r in results:
        key = (r.target.target, r.target.zone)
        fields = {"target": r.target.target, "zone": r.target.zone}
        if r.state == "listed":
            assert r.answer is not None
            listings.append(Listing(target=key[0], zone=key[1], answer=r.answer))
            metrics.DNSBL_LISTED.labels(*key).set(1)
            metrics.DNSBL_UNKNOWN.labels(*key).set(0)
            if key not in before:
                log.error("DNSBL listing: %s is listed by %s (answer %s)", key[0], key[1],
                          r.answer, extra={"event": "dnsbl_listed", "alert": "dnsbl_listed",
                                           **fields})
        elif r.state == "clean":
            metrics.DNSBL_LISTED.labels(*key).set(0)
            metrics.DNSBL_UNKNOWN.labels(*key).set(0)
            if key in before:
                log.warning("DNSBL delisting: %s is no longer listed by %s", *key,
                            extra={"event": "dnsbl_delisted", **fields})
        else:
            unknown += 1
            metrics.DNSBL_UNKNOWN.labels(*key).set(1)
            metrics.DNSBL_LOOKUP_FAILURES_TOTAL.labels(key[1], r.why or "error").inc()
            if key in before:  # no answer is not a delisting
                listings.append(before[key])
            log.warning("DNSBL lookup of %s in %s gave no usable answer (%s%s)", key[0], key[1],
                        r.why, f" {r.answer}" if r.answer else "",
                        extra={"event": "dnsbl_unknown", **fields})

    clean_streak = clean_streak + 1 if not listings and not unknown else 0
    relay = previous.relay if previous else "primary"
    switched_at = previous.switched_at if previous else None
    if listings and relay == "primary" and policy.standby_possible:
        relay, switched_at = "standby", now
        log.error("DNSBL: platform relay switched to standby", extra={
            "event": "relay_switched", "alert": "dnsbl_relay_standby"})
    elif relay == "standby" and clean_streak >= policy.clear_checks:
        relay, switched_at = "primary", now
        log.warning("DNSBL: %d clean checks, platform relay back to primary", clean_streak,
                    extra={"event": "relay_switched"})
    status = DnsblStatus(listed=bool(listings), listings=tuple(listings), checked_at=now,
                         relay=relay, switched_at=switched_at)
    await repo.save(status)
    metrics.DNSBL_LAST_CHECK.set(now.timestamp())
    metrics.DNSBL_STANDBY.set(1 if relay == "standby" else 0)
    return status, clean_streak


async def run_monitor(*, checks: Sequence[Target], resolver: BlocklistResolver,
                      repo: StatusRepo, policy: MonitorPolicy, interval_s: float,
                      stop: asyncio.Event) -> None:
    """Check now, then every ``interval_s``, until ``stop`` is set."""
    if not checks:
        log.info("DNSBL monitor idle: no SECMSG_NOTIFY_DNSBL_IPS or _DOMAINS configured",
                 extra={"event": "dnsbl_idle"})
        return
    log.info("DNSBL monitor: %d lookups every %ss", len(checks), interval_s,
             extra={"event": "dnsbl_started"})
    streak = 0
    while not stop.is_set():
        try:
            _, streak = await check_once(checks=checks, resolver=resolver, repo=repo,
                                         policy=policy, clean_streak=streak)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # MongoDB away: the next round tries again
            log.warning("DNSBL check not recorded (%s)", type(exc).__name__,
                        extra={"event": "dnsbl_check_failed"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
