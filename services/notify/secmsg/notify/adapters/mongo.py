"""MongoDB adapter: tenant branding (read-only). The delivery claims live in NATS KV (kv.py)."""

from __future__ import annotations

import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from secmsg.notify.ports import TenantBranding
from secmsg.shared import mongo
from secmsg.shared.mongo import unavailable_as_503


class MongoTenantDirectory:
    """Tenant display name, footer and disclaimers, cached for ``ttl_s`` per tenant."""

    def __init__(self, db: AsyncDatabase[Any], *, ttl_s: float = 60.0) -> None:
        self._coll = db[mongo.TENANTS]
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, TenantBranding]] = {}

    async def branding(self, tenant_id: str) -> TenantBranding:
        hit = self._cache.get(tenant_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with unavailable_as_503():
            doc = await self._coll.find_one(
                {"_id": tenant_id}, {"name": 1, "display_name": 1, "footer": 1,
                                     "disclaimers": 1})
        doc = doc or {}
        branding = TenantBranding(
            tenant_id=tenant_id,
            display_name=str(doc.get("display_name") or doc.get("name") or tenant_id),
            footer=doc.get("footer") or None,
            disclaimers=tuple(str(d) for d in doc.get("disclaimers") or () if d),
        )
        self._cache[tenant_id] = (time.monotonic() + self._ttl, branding)
        return branding
