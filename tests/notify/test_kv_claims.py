"""KvDeliveryRepo against a real NATS JetStream: the claim rules, compare-and-set under races."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType

from devstack.servers import Server
from secmsg.notify.adapters.kv import BUCKET, STREAM, KvDeliveryRepo, ensure_bucket, kv_key
from secmsg.notify.service import delivery_key
from secmsg.shared import bus
from secmsg.shared.errors import DependencyUnavailable
from tests.notify.conftest import eventually, read_claim

pytestmark = pytest.mark.timeout(60)

TTL_S = 3600.0


@pytest.fixture
async def nc(env: dict[str, str]) -> AsyncIterator[NATS]:
    conn = await bus.connect(env["SECMSG_NATS_URL"], "kv-claims-tests")
    yield conn
    await conn.close()


@pytest.fixture
async def repo(nc: NATS) -> KvDeliveryRepo:
    return await KvDeliveryRepo.open(nc, ttl_s=TTL_S, timeout_s=2.0)


def new_key(address: str = "Bob@Example.org") -> tuple[str, str]:
    message_id = uuid.uuid4().hex
    return message_id, delivery_key("acme", message_id, address)


def t(offset_s: float = 0.0) -> datetime:
    return datetime(2030, 1, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=offset_s)


def test_key_is_kv_safe_and_case_insensitive_in_the_address() -> None:
    mid = "0" * 32
    k = kv_key(delivery_key("acme-2", mid, "Bob.O'Neil+x@Example.org"))
    assert k == kv_key(delivery_key("acme-2", mid, "bob.o'neil+x@example.org"))
    tenant, message_id, digest = k.split(".")
    assert (tenant, message_id, len(digest)) == ("acme-2", mid, 32)
    assert "@" not in k and "'" not in k


async def test_bucket_is_created_once_with_history_1_file_storage_and_ttl(
        nc: NATS, repo: KvDeliveryRepo) -> None:
    js = nc.jetstream()
    await ensure_bucket(js, ttl_s=TTL_S)  # a second replica starting: no error
    cfg = (await js.stream_info(STREAM)).config
    assert cfg.max_msgs_per_subject == 1
    assert cfg.storage == StorageType.FILE
    assert cfg.max_age == pytest.approx(TTL_S)
    await ensure_bucket(js, ttl_s=2 * TTL_S)  # a changed setting is applied
    assert (await js.stream_info(STREAM)).config.max_age == pytest.approx(2 * TTL_S)
    assert (await js.key_value(BUCKET)) is not None


async def test_first_claim_then_busy_while_the_lease_is_live(
        nc: NATS, repo: KvDeliveryRepo) -> None:
    mid, key = new_key()
    first = await repo.claim(key, now=t(), lease_until=t(60))
    assert (first.outcome, first.state, first.attempts) == ("claimed", "sending", 1)
    second = await repo.claim(key, now=t(30), lease_until=t(90))
    assert (second.outcome, second.state, second.attempts) == ("busy", "sending", 1)
    # Held by this process (a copy of the event delivered again while the first is worked
    # on): look again within OWNER_TTL_S, not at the end of the lease.
    assert second.lease_until == t(30 + repo.owner_ttl_s)
    third = await repo.claim(key, now=t(58), lease_until=t(118))
    assert third.outcome == "busy" and third.lease_until == t(60)  # the lease, if sooner
    doc = await read_claim(nc, "acme", mid, "bob@example.org")
    assert doc is not None and doc["state"] == "sending" and doc["attempts"] == 1


async def test_expired_lease_is_taken_over_with_attempts_2(
        nc: NATS, repo: KvDeliveryRepo) -> None:
    mid, key = new_key()
    await repo.claim(key, now=t(), lease_until=t(60))
    again = await repo.claim(key, now=t(61), lease_until=t(121))
    assert (again.outcome, again.attempts, again.lease_until) == ("claimed", 2, t(121))
    doc = await read_claim(nc, "acme", mid, "bob@example.org")
    assert doc is not None and doc["attempts"] == 2
    assert datetime.fromisoformat(doc["lease_until"]) == t(121)


@pytest.mark.parametrize("expired", [False, True], ids=["fresh", "expired-lease"])
async def test_concurrent_claims_exactly_one_wins(repo: KvDeliveryRepo, expired: bool) -> None:
    for _ in range(20):
        _, key = new_key()
        now = t()
        if expired:
            await repo.claim(key, now=t(-120), lease_until=t(-60))
        results = await asyncio.gather(*(
            repo.claim(key, now=now, lease_until=t(60)) for _ in range(6)))
        outcomes = Counter(r.outcome for r in results)
        assert outcomes == {"claimed": 1, "busy": 5}, outcomes
        [won] = [r for r in results if r.outcome == "claimed"]
        assert won.attempts == (2 if expired else 1)


async def test_concurrent_claims_from_separate_connections(
        env: dict[str, str], repo: KvDeliveryRepo) -> None:
    # Two replicas: separate NATS connections, so requests really interleave on the server.
    other_nc = await bus.connect(env["SECMSG_NATS_URL"], "kv-claims-tests-2")
    try:
        other = await KvDeliveryRepo.open(other_nc, ttl_s=TTL_S)
        for _ in range(20):
            _, key = new_key()
            a, b = await asyncio.gather(repo.claim(key, now=t(), lease_until=t(60)),
                                        other.claim(key, now=t(), lease_until=t(60)))
            assert sorted((a.outcome, b.outcome)) == ["busy", "claimed"]
    finally:
        await other_nc.close()


async def test_deferred_is_claimed_again(nc: NATS, repo: KvDeliveryRepo) -> None:
    mid, key = new_key()
    await repo.claim(key, now=t(), lease_until=t(60))
    await repo.mark_deferred(key, now=t(1), reason="451 try later", retry_at=t(31))
    doc = await read_claim(nc, "acme", mid, "bob@example.org")
    assert doc is not None and doc["state"] == "deferred" and doc["reason"] == "451 try later"
    # Re-claimable at once (the event's back-off decides when), with the next attempt number.
    again = await repo.claim(key, now=t(2), lease_until=t(62))
    assert (again.outcome, again.attempts) == ("claimed", 2)
    await repo.mark_sent(key, now=t(3), smtp_target="smtp:25")
    final = await repo.claim(key, now=t(4), lease_until=t(64))
    assert (final.outcome, final.state, final.attempts, final.smtp_target) == (
        "final", "sent", 2, "smtp:25")


async def test_final_states_are_never_overwritten_by_late_writes(
        nc: NATS, repo: KvDeliveryRepo) -> None:
    mid, sent_key = new_key("sent@example.org")
    await repo.claim(sent_key, now=t(), lease_until=t(60))
    await repo.mark_sent(sent_key, now=t(1), smtp_target="smtp:25")
    await repo.mark_deferred(sent_key, now=t(2), reason="late", retry_at=t(30))
    await repo.mark_failed(sent_key, now=t(3), reason="late")
    doc = await read_claim(nc, "acme", mid, "sent@example.org")
    assert doc is not None and doc["state"] == "sent" and "reason" not in doc

    _, failed_key = new_key("failed@example.org")
    await repo.claim(failed_key, now=t(), lease_until=t(60))
    await repo.mark_failed(failed_key, now=t(1), reason="550 no such user")
    await repo.mark_deferred(failed_key, now=t(2), reason="late", retry_at=t(30))
    await repo.mark_failed(failed_key, now=t(3), reason="a second opinion")
    claim = await repo.claim(failed_key, now=t(4), lease_until=t(64))
    assert (claim.outcome, claim.state, claim.reason) == ("final", "failed", "550 no such user")


async def test_deferred_only_from_our_own_sending(nc: NATS, repo: KvDeliveryRepo) -> None:
    mid, key = new_key()
    await repo.mark_deferred(key, now=t(), reason="nothing claimed", retry_at=t(30))
    assert await read_claim(nc, "acme", mid, "bob@example.org") is None


async def test_concurrent_final_writes_keep_sent(nc: NATS, repo: KvDeliveryRepo) -> None:
    # A late mark_failed racing mark_sent: whichever lands, "sent" is what remains.
    for _ in range(10):
        mid, key = new_key()
        await repo.claim(key, now=t(), lease_until=t(60))
        await asyncio.gather(repo.mark_failed(key, now=t(1), reason="x"),
                             repo.mark_sent(key, now=t(1), smtp_target="smtp:25"),
                             repo.mark_deferred(key, now=t(1), reason="y", retry_at=t(9)))
        doc = await read_claim(nc, "acme", mid, "bob@example.org")
        assert doc is not None and doc["state"] == "sent"


async def test_nats_down_is_dependency_unavailable(nats_server: Server, nc: NATS,
                                                   repo: KvDeliveryRepo) -> None:
    _, key = new_key()
    await repo.claim(key, now=t(), lease_until=t(60))
    nats_server.stop()
    try:
        calls: list[Any] = [
            lambda: repo.claim(key, now=t(61), lease_until=t(120)),
            lambda: repo.mark_sent(key, now=t(1), smtp_target="smtp:25"),
            lambda: repo.mark_deferred(key, now=t(1), reason="r", retry_at=t(9)),
            lambda: repo.mark_failed(key, now=t(1), reason="r"),
            lambda: repo.ping(),
        ]
        for call in calls:
            with pytest.raises(DependencyUnavailable):
                await call()
    finally:
        nats_server.start()
    # Back once NATS is: the claim from before survived the restart (file storage), and the
    # SMTP acceptance that could not be written was kept in memory, never forgotten: the
    # recipient is final (sent), not claimable again.
    await eventually(lambda: nc.is_connected, what="the client reconnected")
    assert repo.unrecorded == 1
    again = await repo.claim(key, now=t(61), lease_until=t(120))
    assert (again.outcome, again.state) == ("final", "sent")
    assert repo.unrecorded == 0
    doc = await read_claim(nc, "acme", key.split(":")[1], "bob@example.org")
    assert doc is not None and doc["state"] == "sent" and doc["smtp_target"] == "smtp:25"


async def test_kept_acceptances_are_written_by_the_background_task(
        nats_server: Server, nc: NATS, repo: KvDeliveryRepo) -> None:
    mid, key = new_key()
    repo.start()
    try:
        await repo.claim(key, now=t(), lease_until=t(60))
        nats_server.kill()
        with pytest.raises(DependencyUnavailable):
            await repo.mark_sent(key, now=t(1), smtp_target="smtp:25")
        nats_server.start()
        await eventually(lambda: repo.unrecorded == 0, timeout=30,
                         what="the kept acceptance recorded")
        doc = await read_claim(nc, "acme", mid, "bob@example.org")
        assert doc is not None and doc["state"] == "sent"
    finally:
        await repo.stop()


async def test_a_dead_owners_claim_is_free_before_its_lease_ends(
        env: dict[str, str], nc: NATS) -> None:
    ttl = 1.0
    other_nc = await bus.connect(env["SECMSG_NATS_URL"], "kv-claims-tests-dead")
    dead = await KvDeliveryRepo.open(other_nc, ttl_s=TTL_S, owner_ttl_s=ttl)
    live = await KvDeliveryRepo.open(nc, ttl_s=TTL_S, owner_ttl_s=ttl)
    live.start()
    try:
        _, key = new_key()
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=600)  # the lease alone would hold it for 10 minutes
        assert (await dead.claim(key, now=now, lease_until=lease)).outcome == "claimed"
        held = await live.claim(key, now=now, lease_until=lease)
        assert held.outcome == "busy"  # its owner's heartbeat is fresh
        assert held.lease_until is not None and held.lease_until <= now + timedelta(seconds=ttl)
        await other_nc.close()  # the owner dies without a word: its heartbeat key lapses

        async def taken() -> bool:
            c = await live.claim(key, now=datetime.now(UTC), lease_until=lease)
            return c.outcome == "claimed"

        await eventually(taken, timeout=15, what="the dead owner's claim taken over")
        # A live owner's claim (heartbeats going on) stays its own meanwhile.
        _, key2 = new_key()
        assert (await live.claim(key2, now=now, lease_until=lease)).outcome == "claimed"
        third = await KvDeliveryRepo.open(other_nc2 := await bus.connect(
            env["SECMSG_NATS_URL"], "kv-claims-tests-3"), ttl_s=TTL_S, owner_ttl_s=ttl)
        await asyncio.sleep(3 * ttl)
        assert (await third.claim(key2, now=datetime.now(UTC),
                                  lease_until=lease)).outcome == "busy"
        await other_nc2.close()
    finally:
        await live.stop()


async def test_mark_after_own_claim_writes_without_reading(
        nc: NATS, repo: KvDeliveryRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    gets: list[str] = []
    real_get = repo._kv.get

    async def counting_get(key: str, *args: Any, **kwargs: Any) -> Any:
        gets.append(key)
        return await real_get(key, *args, **kwargs)

    monkeypatch.setattr(repo._kv, "get", counting_get)
    for mark in ("sent", "deferred", "failed"):
        mid, key = new_key()
        await repo.claim(key, now=t(), lease_until=t(60))
        if mark == "sent":
            await repo.mark_sent(key, now=t(1), smtp_target="smtp:25")
        elif mark == "deferred":
            await repo.mark_deferred(key, now=t(1), reason="451", retry_at=t(31))
        else:
            await repo.mark_failed(key, now=t(1), reason="550")
        doc = await read_claim(nc, "acme", mid, "bob@example.org")
        assert doc is not None and doc["state"] == mark and doc["attempts"] == 1
    assert gets == []


async def test_mark_after_a_takeover_uses_the_current_entry(
        env: dict[str, str], nc: NATS, repo: KvDeliveryRepo) -> None:
    # Our lease ran out while SMTP was slow; another replica took the recipient over and
    # failed it. Our late mark_sent must not write from the claim it remembers (attempts 1).
    other_nc = await bus.connect(env["SECMSG_NATS_URL"], "kv-claims-tests-3")
    try:
        other = await KvDeliveryRepo.open(other_nc, ttl_s=TTL_S)
        mid, key = new_key()
        await repo.claim(key, now=t(), lease_until=t(60))
        taken = await other.claim(key, now=t(61), lease_until=t(121))
        assert (taken.outcome, taken.attempts) == ("claimed", 2)
        await other.mark_failed(key, now=t(62), reason="550 no such user")
        await repo.mark_sent(key, now=t(63), smtp_target="smtp:25")
        doc = await read_claim(nc, "acme", mid, "bob@example.org")
        assert doc is not None
        assert (doc["state"], doc["attempts"], doc["smtp_target"]) == ("sent", 2, "smtp:25")

        # A late mark_deferred after a takeover leaves the other replica's final state alone.
        mid, key = new_key()
        await repo.claim(key, now=t(), lease_until=t(60))
        await other.claim(key, now=t(61), lease_until=t(121))
        await other.mark_sent(key, now=t(62), smtp_target="smtp:25")
        await repo.mark_deferred(key, now=t(63), reason="451", retry_at=t(90))
        doc = await read_claim(nc, "acme", mid, "bob@example.org")
        assert doc is not None and (doc["state"], doc["attempts"]) == ("sent", 2)
    finally:
        await other_nc.close()
