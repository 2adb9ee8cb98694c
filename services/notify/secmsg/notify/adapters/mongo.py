"""MongoDB adapters: notify's own ``deliveries`` claims, and tenant branding (read-only).

Claims rely only on what FerretDB also offers: a unique ``_id`` and single-document
``findAndModify``. See ``service.py`` for what the states mean.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from secmsg.notify.ports import Claim, TenantBranding
from secmsg.shared import mongo
from secmsg.shared.mongo import unavailable_as_503

FINAL_STATES = ("sent", "failed")


class MongoDeliveryRepo:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._coll = db[mongo.DELIVERIES]

    async def claim(self, key: str, *, now: datetime, lease_until: datetime) -> Claim:
        async with unavailable_as_503():
            try:
                await self._coll.insert_one({
                    "_id": key, "state": "sending", "lease_until": lease_until, "attempts": 1,
                    "created_at": now, "updated_at": now})
                return Claim("claimed", "sending", 1, lease_until)
            except DuplicateKeyError:
                pass
            doc = await self._coll.find_one_and_update(
                {"_id": key, "$or": [{"state": "deferred"},
                                     {"state": "sending", "lease_until": {"$lt": now}}]},
                {"$set": {"state": "sending", "lease_until": lease_until, "updated_at": now},
                 "$inc": {"attempts": 1}},
                return_document=ReturnDocument.AFTER)
            if doc is not None:
                return Claim("claimed", "sending", int(doc["attempts"]), lease_until)
            doc = await self._coll.find_one({"_id": key})
        if doc is None:  # removed between our two calls: look again on the next delivery
            return Claim("busy", "unknown", 0)
        state = str(doc.get("state"))
        if state in FINAL_STATES:
            return Claim("final", state, int(doc.get("attempts", 1)),
                         reason=doc.get("reason"), smtp_target=doc.get("smtp_target"))
        return Claim("busy", state, int(doc.get("attempts", 0)),
                     lease_until=doc.get("lease_until") if state == "sending" else None)

    async def mark_sent(self, key: str, *, now: datetime, smtp_target: str) -> None:
        async with unavailable_as_503():
            await self._coll.update_one({"_id": key}, {"$set": {
                "state": "sent", "lease_until": None, "updated_at": now, "sent_at": now,
                "smtp_target": smtp_target, "reason": None}})

    async def mark_deferred(self, key: str, *, now: datetime, reason: str,
                            retry_at: datetime) -> None:
        # Only our own claim: never turn a concurrent worker's final state back into "deferred".
        async with unavailable_as_503():
            await self._coll.update_one({"_id": key, "state": "sending"}, {"$set": {
                "state": "deferred", "lease_until": None, "updated_at": now, "reason": reason,
                "retry_at": retry_at}})

    async def mark_failed(self, key: str, *, now: datetime, reason: str) -> None:
        async with unavailable_as_503():
            await self._coll.update_one({"_id": key, "state": {"$ne": "sent"}}, {"$set": {
                "state": "failed", "lease_until": None, "updated_at": now, "reason": reason}})


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
