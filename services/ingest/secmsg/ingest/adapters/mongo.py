"""MongoDB adapters: API-key lookup and Idempotency-Key claims.

Only single-document atomic operations (FerretDB has no transactions): a claim is an insert
guarded by the unique ``_id``; a takeover is a compare-and-set on the old heartbeat.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from secmsg.ingest.ports import Claim, Credentials
from secmsg.ingest.tenants import tenant_from_doc
from secmsg.shared import mongo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def ensure_indexes(db: AsyncDatabase[Any], *, idempotency_ttl_s: int = 7 * 24 * 3600
                         ) -> None:
    async with mongo.unavailable_as_503():
        await db[mongo.API_KEYS].create_index([("tenant_id", ASCENDING)])
        await db[mongo.API_KEYS].create_index([("key_id", ASCENDING)], unique=True)
        # An existing index with another TTL is kept rather than failing start-up.
        with contextlib.suppress(OperationFailure):
            await db[mongo.IDEMPOTENCY].create_index([("created_at", ASCENDING)],
                                                     expireAfterSeconds=idempotency_ttl_s)


class MongoTenantDirectory:
    def __init__(self, db: AsyncDatabase[Any]):
        self._db = db

    async def authenticate(self, api_key: str) -> Credentials | None:
        async with mongo.unavailable_as_503():
            key = await self._db[mongo.API_KEYS].find_one({"_id": hash_api_key(api_key)})
            if key is None or key.get("revoked_at") is not None:
                return None
            tenant = await self._db[mongo.TENANTS].find_one({"_id": key["tenant_id"]})
        if tenant is None or tenant.get("disabled_at") is not None:
            return None
        return Credentials(tenant=tenant_from_doc(tenant), key_id=str(key.get("key_id", "")))

    async def ping(self) -> None:
        async with mongo.unavailable_as_503():
            await self._db.command("ping")


class MongoIdempotencyStore:
    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[mongo.IDEMPOTENCY]

    async def claim(self, doc_id: str, *, message_id: str, attempt: str, now: datetime,
                    stale_before: datetime) -> Claim:
        async with mongo.unavailable_as_503():
            # Two rounds: the document may vanish (TTL) between the failed insert and the read.
            for _ in range(2):
                try:
                    await self._col.insert_one({
                        "_id": doc_id, "message_id": message_id, "state": "pending",
                        "attempt": attempt, "heartbeat_at": now, "created_at": now})
                    return Claim("new", message_id, attempt)
                except DuplicateKeyError:
                    pass
                doc = await self._col.find_one({"_id": doc_id})
                if doc is None:
                    continue
                if doc.get("state") == "done":
                    return Claim("done", doc["message_id"])
                if _aware(doc.get("heartbeat_at")) >= stale_before:
                    return Claim("busy", doc["message_id"])
                # A crashed attempt: take over with the same message id, only if nobody else
                # did in between (compare-and-set on the heartbeat we saw).
                taken = await self._col.find_one_and_update(
                    {"_id": doc_id, "state": "pending", "heartbeat_at": doc.get("heartbeat_at")},
                    {"$set": {"attempt": attempt, "heartbeat_at": now}})
                if taken is not None:
                    return Claim("takeover", doc["message_id"], attempt)
                doc = await self._col.find_one({"_id": doc_id})
                if doc is not None and doc.get("state") == "done":
                    return Claim("done", doc["message_id"])
                return Claim("busy", doc["message_id"] if doc else message_id)
            return Claim("busy", message_id)

    async def heartbeat(self, doc_id: str, *, attempt: str, now: datetime) -> bool:
        async with mongo.unavailable_as_503():
            res = await self._col.update_one(
                {"_id": doc_id, "attempt": attempt, "state": "pending"},
                {"$set": {"heartbeat_at": now}})
        return res.matched_count == 1

    async def mark_done(self, doc_id: str, *, attempt: str, now: datetime) -> bool:
        async with mongo.unavailable_as_503():
            res = await self._col.update_one(
                {"_id": doc_id, "attempt": attempt},
                {"$set": {"state": "done", "done_at": now}})
        return res.matched_count == 1

    async def release(self, doc_id: str, *, attempt: str) -> None:
        """Make a failed attempt's claim immediately stale rather than deleting it.

        The next retry then takes over with the same message id, so a publish whose outcome
        we could not see can never turn into two different messages.
        """
        async with mongo.unavailable_as_503():
            await self._col.update_one(
                {"_id": doc_id, "attempt": attempt, "state": "pending"},
                {"$set": {"heartbeat_at": _EPOCH, "attempt": None}})
