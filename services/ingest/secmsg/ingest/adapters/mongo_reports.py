"""MongoDB reads of the admin reports: the audit export, delivery figures, deliverability,
undeliverable addresses and key rotations -- all owned by store (notify for deliverability)
and read here through the typed views of ``secmsg.shared.documents``; ingest writes none of
them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
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

AUDIT_PAGE = 500  # audit export: documents per read


def _range(field: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds["$gte"] = since
    if until is not None:
        bounds["$lt"] = until
    return {field: bounds} if bounds else {}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MongoReports:
    def __init__(self, db: AsyncDatabase[Any], *, page: int = AUDIT_PAGE):
        self._page = page
        self._audit = ReadView(db, AuditDoc)
        self._deliveries = ReadView(db, DeliveryStatusDoc)
        self._dnsbl = ReadView(db, DnsblStatusDoc)
        self._undeliverable = ReadView(db, UndeliverableDoc)
        self._rotations = ReadView(db, KeyRotationDoc)

    async def audit(self, tenant_id: str, *, since: datetime | None, until: datetime | None,
                    message_id: str | None) -> AsyncIterator[AuditDoc]:
        """Oldest first, in pages of ``page`` by ``_id`` (tenant and time first, see
        ``AuditDoc``): each read is the ``_id`` range ``[tenant:since, tenant:until)`` cut
        after the last ``_id`` seen, sorted by ``_id``, limited -- an index range scan on
        MongoDB whatever the trail holds, and no cursor held open between pages. One
        message's trail adds equality on tenant and message (index ``tenant_message_id``:
        the same ``_id`` order within one message)."""
        ids = AuditDoc.id_range(tenant_id, since, until)
        scope: dict[str, Any] = {} if message_id is None else {"tenant_id": tenant_id,
                                                               "message_id": message_id}
        while True:
            page = await self._audit.find({**scope, "_id": ids}, sort=[("_id", ASCENDING)],
                                          limit=self._page)
            for doc in page:
                yield doc
            if len(page) < self._page:
                return
            ids = {"$gt": page[-1].id, "$lt": ids["$lt"]}

    async def delivery_counts(self, tenant_id: str, *, since: datetime | None,
                              until: datetime | None) -> dict[str, int]:
        """One pass over the tenant's rows in the range (index ``tenant_updated``), counted
        per state."""
        by_state = await self._deliveries.count_by(
            {"tenant_id": tenant_id, **_range("updated_at", since, until)}, "state")
        return {state: by_state.get(state, 0)
                for state in ("sent", "deferred", "bounced", "failed")}

    async def dnsbl(self) -> DnsblStatusDoc | None:
        return await self._dnsbl.get(mongo.DNSBL_STATUS_ID)

    async def undeliverable(self, tenant_id: str) -> list[UndeliverableDoc]:
        """Oldest first: the ``_id`` range of the tenant (``<tenant>:<address>``), at most
        10,000, ordered by time here (bounded: no sort on the server)."""
        docs = await self._undeliverable.find(
            {"_id": {"$gt": f"{tenant_id}:", "$lt": f"{tenant_id};"}}, limit=10_000)
        return sorted(docs, key=lambda d: (d.at is None, d.at or _EPOCH, d.id))

    async def is_undeliverable(self, tenant_id: str, address: str) -> bool:
        doc = await self._undeliverable.find_one(
            {"_id": UndeliverableDoc.id_for(tenant_id, address), "tenant_id": tenant_id},
            ["_id", "tenant_id", "address"])
        return doc is not None

    async def rotation(self, tenant_id: str, rotation_id: str) -> KeyRotationDoc | None:
        return await self._rotations.find_one({"_id": rotation_id, "tenant_id": tenant_id})
