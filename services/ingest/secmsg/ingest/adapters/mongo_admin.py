"""MongoDB adapters of the sender and tenant-admin surfaces: messages and revocations,
API keys, tenant users, user tokens and the tenant document's admin fields.

Inserts with a unique ``_id`` carry every exactly-once decision (revocations, rotations);
the remaining updates are single-document ``$set``s whose repetition changes nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from secmsg.ingest import admin, slip
from secmsg.ingest.ports import MessageRecord
from secmsg.shared import mongo
from secmsg.shared.documents import (
    AuditDoc,
    DeliveryStatusDoc,
    MessageDoc,
    ReadView,
    RevocationDoc,
    TokenDoc,
    TokenUseDoc,
    later,
)
from secmsg.shared.errors import NotFound
from secmsg.shared.tenant_cache import TenantChanges

_NO_SECRETS = {"_id": 0}


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def aware_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with its naive datetimes read as UTC (for a client without tz_aware)."""
    return {k: _aware(v) for k, v in doc.items()}


async def _revoke(col: Any, query: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """Set ``revoked_at`` once (an API key or a token): the document as it was before, so
    ``revoked_at`` None means this call revoked it; None: no such document."""
    async with mongo.unavailable_as_503():
        # No projection: FerretDB does not implement it for findAndModify.
        doc = await col.find_one_and_update({**query, "revoked_at": None},
                                            {"$set": {"revoked_at": now}})
        if doc is None:
            doc = await col.find_one(query)
    if doc is None:
        return None
    doc.pop("_id", None)  # the secret's hash stays here
    return aware_doc(doc)


class MongoMessageRepo:
    """Store's ``messages`` (read-only view) and ingest's own ``revocations``."""

    def __init__(self, db: AsyncDatabase[Any]):
        self._db = db
        self._messages = ReadView(db, MessageDoc)
        self._delivery = ReadView(db, DeliveryStatusDoc)
        self._audit = ReadView(db, AuditDoc)

    async def get(self, tenant_id: str, message_id: str) -> MessageRecord | None:
        doc = await self._messages.find_one({"_id": message_id, "tenant_id": tenant_id},
                                            {"objects": 0})
        if doc is None:
            return None
        return MessageRecord(
            message_id=doc.id, tenant_id=tenant_id, sender=doc.sender,
            recipients=tuple((r.address, r.kind) for r in doc.recipients),
            submitted_by=doc.submitted_by, state=doc.state, expires_at=doc.expires_at,
            received_at=doc.received_at, notify=doc.notify)

    async def received_from(self, tenant_id: str, recipient: str,
                            senders: list[str]) -> set[str]:
        found: set[str] = set()
        for sender in senders:
            # Senders are stored as given; the comparison is case-insensitive.
            doc = await self._messages.find_one(
                {"tenant_id": tenant_id, "recipient_addresses": recipient.lower(),
                 "sender": {"$regex": f"^{re.escape(sender)}$", "$options": "i"}}, ["_id"])
            if doc is not None:
                found.add(sender.lower())
        return found

    async def revocations(self, tenant_id: str, message_id: str) -> list[dict[str, Any]]:
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.REVOCATIONS].find(
                {"tenant_id": tenant_id, "message_id": message_id})
            return [aware_doc(d) async for d in cursor]

    async def revoke(self, doc: dict[str, Any]) -> bool:
        async with mongo.unavailable_as_503():
            try:
                await self._db[mongo.REVOCATIONS].insert_one(doc)
            except DuplicateKeyError:
                return False
        return True

    async def restore(self, tenant_id: str, message_id: str, address: str) -> str | None:
        key = {"_id": f"{message_id}:{address}", "tenant_id": tenant_id}
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.REVOCATIONS].find_one(key)
            if doc is None:
                return None
            if doc.get("kind") == "revoked":
                await self._db[mongo.REVOCATIONS].delete_one({**key, "kind": "revoked"})
        return str(doc.get("kind"))

    async def delivery(self, tenant_id: str, message_id: str) -> list[DeliveryStatusDoc]:
        return await self._delivery.find({"tenant_id": tenant_id, "message_id": message_id})

    async def reader_events(self, tenant_id: str, message_id: str) -> list[AuditDoc]:
        return await self._audit.find(
            {"tenant_id": tenant_id, "message_id": message_id,
             "kind": {"$in": list(slip.READER_KINDS)}},
            sort=[("at", ASCENDING)], limit=10_000)

    async def file_names(self, tenant_id: str, message_id: str) -> dict[str, str]:
        doc = await self._messages.find_one({"_id": message_id, "tenant_id": tenant_id},
                                            {"objects": 1})
        return {o.object_id: o.filename for o in (doc.objects if doc else ())
                if o.role == "attachment" and o.filename}


class MongoAccessRepo:
    """API keys, tenant users, tokens and the tenant document's admin fields. Every change
    to a key or the tenant document drops this process's cached entries of the tenant at once
    (``changes``); other processes hear of it through ``tenant.changed`` (``audit.record``)."""

    def __init__(self, db: AsyncDatabase[Any], *, changes: TenantChanges | None = None):
        self._db = db
        self._changes = changes or TenantChanges()
        self._tokens = ReadView(db, TokenDoc)
        self._revocations = ReadView(db, RevocationDoc)
        self._use = ReadView(db, TokenUseDoc)

    async def list_keys(self, tenant_id: str) -> list[dict[str, Any]]:
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.API_KEYS].find({"tenant_id": tenant_id}, _NO_SECRETS
                                                   ).sort("created_at", ASCENDING)
            return [aware_doc(d) async for d in cursor]

    async def create_key(self, tenant_id: str, *, label: str, scopes: tuple[str, ...]) -> str:
        return await admin.create_api_key(self._db, tenant_id=tenant_id, label=label,
                                          scopes=scopes)

    async def revoke_key(self, tenant_id: str, key_id: str, *,
                         now: datetime) -> dict[str, Any] | None:
        try:
            return await _revoke(self._db[mongo.API_KEYS], {"key_id": key_id,
                                                            "tenant_id": tenant_id}, now)
        finally:
            self._changes.forget(tenant_id)

    async def users(self, tenant_id: str, emails: list[str] | None = None
                    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if emails is not None:
            query["_id"] = {"$in": [f"{tenant_id}:{e.lower()}" for e in emails]}
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.TENANT_USERS].find(query).sort("_id", ASCENDING)
            return [aware_doc(d) async for d in cursor]

    async def put_user(self, tenant_id: str, *, email: str, role: str, by: str,
                       now: datetime) -> dict[str, Any]:
        doc_id = f"{tenant_id}:{email.lower()}"
        col = self._db[mongo.TENANT_USERS]
        async with mongo.unavailable_as_503():
            await col.update_one(
                {"_id": doc_id},
                {"$set": {"role": role, "updated_at": now, "updated_by": by},
                 "$setOnInsert": {"tenant_id": tenant_id, "email": email,
                                  "created_at": now, "created_by": by}},
                upsert=True)
            doc = await col.find_one({"_id": doc_id})
        return aware_doc(doc or {})

    async def delete_user(self, tenant_id: str, email: str) -> bool:
        async with mongo.unavailable_as_503():
            res = await self._db[mongo.TENANT_USERS].delete_one(
                {"_id": f"{tenant_id}:{email.lower()}", "tenant_id": tenant_id})
        return res.deleted_count == 1

    async def tokens(self, tenant_id: str, email: str | None) -> list[dict[str, Any]]:
        """The tenant's user tokens (retrieve's ``tokens``, read-only) with what ingest knows
        of them: an admin's revocation (``revocations``) and the last use here
        (``token_use``)."""
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if email:
            query["email"] = email.lower()
        docs = await self._tokens.find(query, sort=[("created_at", DESCENDING)], limit=1000)
        ids = [d.token_id for d in docs]
        revoked = {r.token_id: r for r in await self._revocations.find(
            {"_id": {"$in": [RevocationDoc.id_for_token(i) for i in ids]}})}
        used = {u.id: u for u in await self._use.find({"_id": {"$in": ids}})}
        out = []
        for d in docs:
            rev, use = revoked.get(d.token_id), used.get(d.token_id)
            out.append({**d.model_dump(exclude={"id"}),
                        "revoked_at": d.revoked_at or (rev.revoked_at if rev else None),
                        "last_used_at": later(d.last_used_at,
                                              use.last_used_at if use else None)})
        return out

    async def revoke_token(self, tenant_id: str, token_id: str, *,
                           now: datetime, by: str = "") -> dict[str, Any] | None:
        """Revoke a user token for the tenant: an insert-only ``revocations`` entry (retrieve
        owns ``tokens``; both services' token checks read the entry). The token as it was
        before (``revoked_at`` None: this call revoked it); None: no such token."""
        doc = await self._tokens.find_one({"token_id": token_id, "tenant_id": tenant_id})
        if doc is None:
            return None
        before = doc.model_dump(exclude={"id"})
        if doc.revoked_at is not None:
            return before
        try:
            async with mongo.unavailable_as_503():
                await self._db[mongo.REVOCATIONS].insert_one({
                    "_id": RevocationDoc.id_for_token(token_id), "kind": "token",
                    "tenant_id": tenant_id, "token_id": token_id, "recipient": doc.email,
                    "revoked_at": now, "revoked_by": by})
        except DuplicateKeyError:
            rev = await self._revocations.get(RevocationDoc.id_for_token(token_id))
            before["revoked_at"] = rev.revoked_at if rev else now
        return before

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.TENANTS].find_one({"_id": tenant_id})
        if doc is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return aware_doc(doc)

    async def set_fields(self, tenant_id: str, fields: dict[str, Any],
                         unset: tuple[str, ...] = ()) -> None:
        update: dict[str, Any] = {}
        if fields:
            update["$set"] = fields
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        if not update:
            return
        async with mongo.unavailable_as_503():
            res = await self._db[mongo.TENANTS].update_one({"_id": tenant_id}, update)
        self._changes.forget(tenant_id)
        if res.matched_count != 1:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
