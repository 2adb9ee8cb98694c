"""MongoDB reads of the admin reports: the audit export, delivery figures, deliverability,
undeliverable addresses and key rotations -- all owned by store (notify for deliverability)
and read here through the typed views of ``secmsg.shared.documents``; ingest writes none of
them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import mongo
from secmsg.shared.documents import (
    AuditDoc,
    DeliveryStatusDoc,
    DnsblStatusDoc,
    KeyRotationDoc,
    ReadView,
    UndeliverableDoc,
)

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
        self._audit = ReadView(db, AuditDoc)
        self._deliveries = ReadView(db, DeliveryStatusDoc)
        self._dnsbl = ReadView(db, DnsblStatusDoc)
        self._undeliverable = ReadView(db, UndeliverableDoc)
        self._rotations = ReadView(db, KeyRotationDoc)

    async def audit(self, tenant_id: str, *, since: datetime | None, until: datetime | None,
                    message_id: str | None) -> AsyncIterator[AuditDoc]:
        query: dict[str, Any] = {"tenant_id": tenant_id, **_range("at", since, until)}
        if message_id is not None:
            query["message_id"] = message_id
        async for doc in self._audit.iterate(query, sort=[("at", ASCENDING), ("_id", ASCENDING)],
                                             batch_size=_BATCH):
            yield doc

    async def delivery_counts(self, tenant_id: str, *, since: datetime | None,
                              until: datetime | None) -> dict[str, int]:
        base = {"tenant_id": tenant_id, **_range("updated_at", since, until)}
        return {state: await self._deliveries.count({**base, "state": state})
                for state in ("sent", "deferred", "bounced", "failed")}

    async def dnsbl(self) -> DnsblStatusDoc | None:
        return await self._dnsbl.get(mongo.DNSBL_STATUS_ID)

    async def undeliverable(self, tenant_id: str) -> list[UndeliverableDoc]:
        return await self._undeliverable.find({"tenant_id": tenant_id}, sort=[("at", ASCENDING)],
                                              limit=10_000)

    async def is_undeliverable(self, tenant_id: str, address: str) -> bool:
        doc = await self._undeliverable.find_one(
            {"_id": UndeliverableDoc.id_for(tenant_id, address), "tenant_id": tenant_id},
            ["_id", "tenant_id", "address"])
        return doc is not None

    async def rotation(self, tenant_id: str, rotation_id: str) -> KeyRotationDoc | None:
        return await self._rotations.find_one({"_id": rotation_id, "tenant_id": tenant_id})
