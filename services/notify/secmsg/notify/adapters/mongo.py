"""MongoDB adapter: tenant branding and templates (read-only). The delivery claims live in
NATS KV (kv.py)."""

from __future__ import annotations

import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from secmsg.notify.ports import TenantBranding
from secmsg.shared import mongo, templating
from secmsg.shared.mongo import unavailable_as_503


class MongoTenantDirectory:
    """Tenant display name, footer, disclaimers and templates, cached for ``ttl_s`` per
    tenant (a saved template reaches notify within that time)."""

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
                                     "disclaimers": 1, "templates": 1})
        doc = doc or {}
        branding = TenantBranding(
            tenant_id=tenant_id,
            display_name=str(doc.get("display_name") or doc.get("name") or tenant_id),
            footer=doc.get("footer") or None,
            disclaimers=tuple(str(d) for d in doc.get("disclaimers") or () if d),
            templates=_templates(doc.get("templates")),
        )
        self._cache[tenant_id] = (time.monotonic() + self._ttl, branding)
        return branding


def _templates(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {kind: entry["source"] for kind, entry in value.items()
            if kind in templating.KINDS and isinstance(entry, dict)
            and isinstance(entry.get("source"), str)}
