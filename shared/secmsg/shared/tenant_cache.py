"""Per-process caches of what rarely changes (API keys, tenant settings), dropped on change.

A submission used to cost two MongoDB reads before any work (the API key, then its tenant), a
notification one (the tenant's branding). Those documents change only through the tenant
admin API, so each process keeps them in memory and forgets a tenant's entries as soon as it
hears that the tenant changed:

* ingest, after each admin change (audit actions in ``CHANGE_ACTIONS``), drops its own entries
  at once and publishes ``tenant.changed`` (``events.TenantChanged``) on
  ``secmsg.<tenant>.tenant.changed``;
* every process that caches (each ingest and notify replica) listens on
  ``secmsg.*.tenant.changed`` with a plain core-NATS subscription (every replica must hear it,
  so no durable consumer, nothing to ack) and drops that tenant's entries in all its caches.

A revoked API key therefore stops working everywhere within the bus's delivery time
(milliseconds). Safety nets, since a core subscription is at-most-once:

* no listener, or NATS not connected right now -> the caches are not used (every read goes
  to MongoDB): a change made meanwhile cannot be missed;
* a reconnect to NATS (changes may have been published while away) drops everything;
* every entry expires after ``ttl_s`` anyway, and a cache holds at most ``max_entries``
  (least recently used go first), so a flood of distinct keys cannot grow the process.

What is not cached: misses (an unknown key is looked up every time, so a key created on
another replica works at once), user tokens (revoked by retrieve too, and by "sign out
everywhere"); only their tenant document is.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cachetools import TTLCache
from prometheus_client import Counter

from secmsg.shared import subjects
from secmsg.shared.errors import PoisonEvent
from secmsg.shared.events import TenantAspect, TenantChanged, decode_event

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

LOOKUPS = Counter("secmsg_tenant_cache_lookups_total",
                  "Lookups in a tenant-data cache (hit, miss, or bypassed: not listening to "
                  "tenant.changed right now)", ["cache", "result"])

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# The audit actions that change a tenant's settings or API keys, and what they change.
CHANGE_ACTIONS: dict[str, TenantAspect] = {
    "apikey.created": "api_keys", "apikey.revoked": "api_keys",
    "policy.changed": "policy", "branding.changed": "branding",
    "template.changed": "templates", "smtp.changed": "smtp", "dkim.changed": "dkim",
    "key.rotated": "key_generation", "undeliverable.cleared": "undeliverable",
    # List-Unsubscribe is part of how the tenant's notifications look (notify's branding)
    "list_unsubscribe.changed": "branding",
}


def tenant_changed(tenant_id: str, aspect: TenantAspect) -> TenantChanged:
    """The event to publish after changing ``aspect`` of the tenant."""
    return TenantChanged(tenant_id=tenant_id, message_id="", change_id=uuid.uuid4().hex,
                         aspect=aspect)


class TenantCache(Generic[K, V]):
    """A bounded TTL cache whose entries each belong to a tenant (``TenantChanges.cache``).
    Used from the event loop only (no lock)."""

    def __init__(self, owner: TenantChanges, *, name: str, max_entries: int, ttl_s: float,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._owner = owner
        self._hit, self._miss, self._bypass = (LOOKUPS.labels(name, r)
                                               for r in ("hit", "miss", "bypassed"))
        self._data: TTLCache[K, tuple[str, V]] = TTLCache(
            maxsize=max(1, max_entries), ttl=max(ttl_s, 1e-9), timer=timer)
        self.enabled = max_entries > 0 and ttl_s > 0

    def get(self, key: K) -> V | None:
        if not self.enabled or not self._owner.trusted():
            self._bypass.inc()
            return None
        hit = self._data.get(key)
        (self._miss if hit is None else self._hit).inc()
        return None if hit is None else hit[1]

    def put(self, key: K, tenant_id: str, value: V) -> None:
        if self.enabled and self._owner.trusted():
            self._data[key] = (tenant_id, value)

    def drop_tenant(self, tenant_id: str) -> None:
        for key in [k for k, (t, _) in self._data.items() if t == tenant_id]:
            self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class TenantChanges:
    """The process's caches and the ``tenant.changed`` listener that keeps them honest."""

    def __init__(self) -> None:
        self._caches: list[TenantCache[Any, Any]] = []
        self._nc: NATS | None = None
        self._sub: Subscription | None = None
        self._reconnects = 0

    def cache(self, name: str, *, max_entries: int, ttl_s: float,
              timer: Callable[[], float] = time.monotonic) -> TenantCache[Any, Any]:
        """A new cache (``name`` labels its metrics) kept honest by this listener."""
        made: TenantCache[Any, Any] = TenantCache(self, name=name, max_entries=max_entries,
                                                  ttl_s=ttl_s, timer=timer)
        self._caches.append(made)
        return made

    def forget(self, tenant_id: str) -> None:
        """Drop every cached entry of the tenant (this process only)."""
        for c in self._caches:
            c.drop_tenant(tenant_id)

    def forget_all(self) -> None:
        for c in self._caches:
            c.clear()

    def trusted(self) -> bool:
        """Whether cached entries may be used: listening, connected, and no reconnect since
        the entries were made (a reconnect drops them all: changes may have been missed)."""
        nc = self._nc
        if nc is None or self._sub is None or not nc.is_connected:
            return False
        reconnects = int(nc.stats.get("reconnects", 0))
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self.forget_all()
        return True

    async def listen(self, nc: NATS) -> None:
        """Subscribe to every tenant's ``tenant.changed`` on ``nc`` (core NATS)."""
        self._reconnects = int(nc.stats.get("reconnects", 0))
        self.forget_all()
        self._sub = await nc.subscribe(subjects.any_tenant(subjects.TENANT_CHANGED),
                                       cb=self._on_message)
        self._nc = nc

    async def close(self) -> None:
        sub, self._sub, self._nc = self._sub, None, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closing anyway
                log.debug("unsubscribe failed: %s", type(exc).__name__)
        self.forget_all()

    async def _on_message(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data, TenantChanged)
        except PoisonEvent as exc:
            # Whatever it meant, nothing cached can be trusted to be current any more.
            log.warning("undecodable tenant.changed (%s): every cache dropped", exc.detail)
            self.forget_all()
            return
        log.debug("tenant %s changed (%s): its cached entries dropped", event.tenant_id,
                  event.aspect)
        self.forget(event.tenant_id)

