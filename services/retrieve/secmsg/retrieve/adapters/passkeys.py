"""MongoDB repository of passkeys (``passkeys``, owned by retrieve).

``_id`` is the sha256 of the credential id, so the sign-in lookup (by the id the browser
returns) is an ``_id`` read, and a credential id can be registered once only (an insert).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from secmsg.retrieve.adapters.mongo import _aware
from secmsg.retrieve.ports import PasskeyRecord
from secmsg.shared import mongo

Doc = dict[str, Any]
MAX_PER_PERSON = 20  # listing bound; registration refuses more (passkeys.MAX_PASSKEYS)


def _key(credential_id: str) -> str:
    return hashlib.sha256(credential_id.encode()).hexdigest()


def _record(doc: Doc) -> PasskeyRecord:
    return PasskeyRecord(
        credential_id=doc["credential_id"], tenant_id=doc["tenant_id"], email=doc["email"],
        public_key=doc["public_key"], sign_count=int(doc.get("sign_count") or 0),
        transports=tuple(doc.get("transports") or ()), name=str(doc.get("name") or ""),
        created_at=_aware(doc["created_at"]) or doc["created_at"],
        last_used_at=_aware(doc.get("last_used_at")), backed_up=bool(doc.get("backed_up")))


class MongoPasskeyRepo:
    def __init__(self, db: AsyncDatabase[Doc]):
        self._col = db[mongo.PASSKEYS]

    async def add(self, record: PasskeyRecord) -> bool:
        try:
            async with mongo.unavailable_as_503():
                await self._col.insert_one({
                    "_id": _key(record.credential_id), "credential_id": record.credential_id,
                    "tenant_id": record.tenant_id, "email": record.email,
                    "public_key": record.public_key, "sign_count": record.sign_count,
                    "transports": list(record.transports), "name": record.name,
                    "created_at": record.created_at, "last_used_at": record.last_used_at,
                    "backed_up": record.backed_up})
        except DuplicateKeyError:
            return False
        return True

    async def get(self, credential_id: str) -> PasskeyRecord | None:
        async with mongo.unavailable_as_503():
            doc = await self._col.find_one({"_id": _key(credential_id)})
        return _record(doc) if doc is not None else None

    async def list(self, *, tenant_id: str, email: str) -> list[PasskeyRecord]:
        async with mongo.unavailable_as_503():
            cursor = self._col.find({"tenant_id": tenant_id, "email": email}).sort(
                "created_at", ASCENDING).limit(MAX_PER_PERSON)
            return [_record(d) async for d in cursor]

    async def used(self, credential_id: str, *, sign_count: int, now: datetime) -> None:
        async with mongo.unavailable_as_503():
            await self._col.update_one({"_id": _key(credential_id)},
                                       {"$set": {"sign_count": sign_count,
                                                 "last_used_at": now}})

    async def remove(self, *, tenant_id: str, email: str, credential_id: str) -> bool:
        async with mongo.unavailable_as_503():
            res = await self._col.delete_one({"_id": _key(credential_id),
                                              "tenant_id": tenant_id, "email": email})
        return res.deleted_count == 1


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    await db[mongo.PASSKEYS].create_index([("tenant_id", ASCENDING), ("email", ASCENDING)],
                                          name="tenant_email")
