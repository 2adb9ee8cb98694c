"""The tenant-data cache's rules (shared/tenant_cache.py) as pure logic: bounded, expiring,
dropped per tenant, and not used at all while its listener cannot hear changes. The path
through real processes and NATS is tests/ingest/test_key_cache.py."""

from __future__ import annotations

from typing import Any

from secmsg.shared.events import TenantChanged
from secmsg.shared.tenant_cache import TenantChanges, tenant_changed


class FakeSub:
    async def unsubscribe(self) -> None:
        return None


class FakeNats:
    """Just what ``TenantChanges`` asks of a connection."""

    def __init__(self) -> None:
        self.is_connected = True
        self.stats: dict[str, int] = {"reconnects": 0}
        self.cb: Any = None

    async def subscribe(self, subject: str, cb: Any) -> FakeSub:
        assert subject == "secmsg.*.tenant.changed"
        self.cb = cb
        return FakeSub()


class Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data


async def listening() -> tuple[TenantChanges, FakeNats]:
    changes, nc = TenantChanges(), FakeNats()
    await changes.listen(nc)  # type: ignore[arg-type]
    return changes, nc


async def test_not_used_until_listening_nor_while_disconnected() -> None:
    changes = TenantChanges()
    cache = changes.cache("t1", max_entries=10, ttl_s=60)
    cache.put("k", "acme", 1)
    assert cache.get("k") is None and len(cache) == 0
    nc = FakeNats()
    await changes.listen(nc)  # type: ignore[arg-type]
    cache.put("k", "acme", 1)
    assert cache.get("k") == 1
    nc.is_connected = False
    assert cache.get("k") is None
    nc.is_connected = True
    nc.stats["reconnects"] = 1  # changes may have been missed while away: all dropped
    assert cache.get("k") is None and len(cache) == 0


async def test_bounded_and_expiring() -> None:
    changes, _ = await listening()
    now = [0.0]
    cache = changes.cache("t2", max_entries=3, ttl_s=30, timer=lambda: now[0])
    for i in range(5):
        cache.put(f"k{i}", "acme", i)
    assert len(cache) == 3 and cache.get("k0") is None and cache.get("k4") == 4
    now[0] = 31.0
    assert cache.get("k4") is None


async def test_a_change_drops_that_tenants_entries_in_every_cache() -> None:
    changes, nc = await listening()
    keys = changes.cache("t3", max_entries=10, ttl_s=60)
    tenants = changes.cache("t4", max_entries=10, ttl_s=60)
    keys.put("k1", "acme", "a")
    keys.put("k2", "other", "b")
    tenants.put("acme", "acme", "A")
    event = tenant_changed("acme", "api_keys")
    await nc.cb(Msg(event.model_dump_json().encode()))
    assert keys.get("k1") is None and tenants.get("acme") is None
    assert keys.get("k2") == "b"
    await nc.cb(Msg(b"{not json"))  # whatever it was, nothing cached is trusted any more
    assert keys.get("k2") is None


def test_the_event_round_trips() -> None:
    event = tenant_changed("acme", "policy")
    again = TenantChanged.model_validate_json(event.model_dump_json())
    assert again == event and again.kind == "tenant.changed" and again.message_id == ""
