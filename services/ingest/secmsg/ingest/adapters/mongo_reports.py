"""MongoDB adapters of the admin reports: audit export, delivery figures, deliverability,
undeliverable addresses, and key rotations (the one request ingest creates)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from secmsg.ingest.adapters.mongo_admin import aware_doc
from secmsg.shared import mongo

_BATCH = 500


def _range(field: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds["$gte"] = since
    if until is not None:
        bounds["$lt"] = until
    return {field: bounds} if bounds else {}


class MongoReports:
    def __init__(self, db: AsyncDatabase[Any]):
        self._db = db

    async def audit(self, tenant_id: str, *, since: datetime | None, until: datetime | None,
                    message_id: str | None) -> AsyncIterator[dict[str, Any]]:
        query: dict[str, Any] = {"tenant_id": tenant_id, **_range("at", since, until)}
        if message_id is not None:
            query["message_id"] = message_id
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.AUDIT].find(query, batch_size=_BATCH).sort(
                [("at", ASCENDING), ("_id", ASCENDING)])
            async for doc in cursor:
                yield aware_doc(doc)

    async def delivery_counts(self, tenant_id: str, *, since: datetime | None,
                              until: datetime | None) -> dict[str, int]:
        base = {"tenant_id": tenant_id, **_range("updated_at", since, until)}
        col = self._db[mongo.DELIVERY_STATUS]
        async with mongo.unavailable_as_503():
            return {state: await col.count_documents({**base, "state": state})
                    for state in ("sent", "deferred", "bounced", "failed")}

    async def dnsbl(self) -> dict[str, Any] | None:
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.DNSBL_STATUS].find_one({"_id": mongo.DNSBL_STATUS_ID})
        return aware_doc(doc) if doc else None

    async def undeliverable(self, tenant_id: str) -> list[dict[str, Any]]:
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.UNDELIVERABLE].find({"tenant_id": tenant_id}).sort(
                "at", ASCENDING).limit(10_000)
            return [aware_doc(d) async for d in cursor]

    async def clear_undeliverable(self, tenant_id: str, address: str) -> bool:
        async with mongo.unavailable_as_503():
            res = await self._db[mongo.UNDELIVERABLE].delete_one(
                {"_id": f"{tenant_id}:{address.lower()}", "tenant_id": tenant_id})
        return res.deleted_count == 1

    # --- key rotations ---

    async def active_rotation(self, tenant_id: str) -> dict[str, Any] | None:
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.KEY_ROTATIONS].find_one(
                {"tenant_id": tenant_id, "state": {"$in": ["requested", "running"]}})
        return aware_doc(doc) if doc else None

    async def insert_rotation(self, doc: dict[str, Any]) -> bool:
        async with mongo.unavailable_as_503():
            try:
                await self._db[mongo.KEY_ROTATIONS].insert_one(doc)
            except DuplicateKeyError:
                return False
        return True

    async def rotation(self, tenant_id: str, rotation_id: str) -> dict[str, Any] | None:
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.KEY_ROTATIONS].find_one(
                {"_id": rotation_id, "tenant_id": tenant_id})
        return aware_doc(doc) if doc else None
