"""MongoDB adapters: API-key lookup (cached) and Idempotency-Key claims.

Only single-document atomic operations (FerretDB has no transactions): a claim is an insert
guarded by the unique ``_id``; a takeover is a compare-and-set on the old heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from secmsg.ingest.ports import (
    DEFAULT_SCOPES,
    SCOPE_ADMIN,
    Claim,
    Credentials,
    StoredTemplate,
    Tenant,
    TenantProfile,
)
from secmsg.ingest.tenant_smtp import SmtpConfig
from secmsg.ingest.tenants import tenant_from_doc
from secmsg.shared import mongo
from secmsg.shared.documents import (
    AccountDoc,
    ReadView,
    RevocationDoc,
    TokenDoc,
    TokenUseDoc,
    later,
)
from secmsg.shared.errors import NotFound
from secmsg.shared.ids import UserToken, looks_like_user_token, token_hash
from secmsg.shared.tenant_cache import TenantCache, TenantChanges

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOKEN_SCOPES = frozenset({"read", "send", "admin"})
# last_used_at is written at most this often per token: a busy toolbar must not turn every
# request into a database write.
LAST_USED_EVERY = timedelta(minutes=1)


def hash_api_key(api_key: str) -> str:
    return token_hash(api_key)


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


@dataclass(frozen=True)
class _ApiKey:
    """What a request needs of an ``api_keys`` document (cached by the key's hash)."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    revoked: bool


class MongoTenantDirectory:
    """Who a bearer secret is. API keys and tenants are cached (``changes``, see
    ``secmsg.shared.tenant_cache``): a submission then costs no MongoDB read to authenticate;
    user tokens are read every time (retrieve revokes them too), only their tenant is cached.
    """

    def __init__(self, db: AsyncDatabase[Any], *, changes: TenantChanges | None = None,
                 ttl_s: float = 30.0, max_entries: int = 10_000):
        self._db = db
        self._tokens = ReadView(db, TokenDoc)
        self._accounts = ReadView(db, AccountDoc)
        self._revocations = ReadView(db, RevocationDoc)
        self._use = ReadView(db, TokenUseDoc)
        changes = changes or TenantChanges()
        self._keys: TenantCache[str, _ApiKey] = changes.cache(
            "ingest_api_keys", max_entries=max_entries, ttl_s=ttl_s)
        self._tenants: TenantCache[str, Tenant] = changes.cache(
            "ingest_tenants", max_entries=max_entries, ttl_s=ttl_s)

    async def _api_key(self, key_hash: str) -> _ApiKey | None:
        key = self._keys.get(key_hash)
        if key is not None:
            return key
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.API_KEYS].find_one({"_id": key_hash})
        if doc is None:
            return None  # misses are not cached: a new key works at once everywhere
        scopes = doc.get("scopes")
        key = _ApiKey(tenant_id=str(doc["tenant_id"]), key_id=str(doc.get("key_id", "")),
                      scopes=DEFAULT_SCOPES if scopes is None
                      else frozenset(str(s) for s in scopes),
                      revoked=doc.get("revoked_at") is not None)
        self._keys.put(key_hash, key.tenant_id, key)
        return key

    async def _tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant, or None if it does not exist or is disabled."""
        tenant = self._tenants.get(tenant_id)
        if tenant is not None:
            return tenant
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.TENANTS].find_one({"_id": tenant_id})
        if doc is None or doc.get("disabled_at") is not None:
            return None
        tenant = tenant_from_doc(doc)
        self._tenants.put(tenant_id, tenant_id, tenant)
        return tenant

    async def authenticate(self, secret: str) -> Credentials | None:
        if looks_like_user_token(secret):
            return await self._token(secret)
        key = await self._api_key(hash_api_key(secret))
        if key is None or key.revoked:
            return None
        tenant = await self._tenant(key.tenant_id)
        if tenant is None:
            return None
        return Credentials(tenant=tenant, key_id=key.key_id, scopes=key.scopes)

    async def _token(self, token: str) -> Credentials | None:
        """A user token is dead when revoked (by its owner in ``tokens``, or by a tenant admin
        in ``revocations``), expired, or issued before the account's ``sessions_valid_after``
        ("sign out everywhere"). ``tokens`` and ``accounts`` are retrieve's: read through the
        shared views; ingest records its own uses in ``token_use``."""
        now = datetime.now(UTC)
        if UserToken.parse(token) is None:
            return None
        doc = await self._tokens.get(hash_api_key(token))
        if doc is None or doc.revoked_at is not None or not doc.tenant_id or not doc.email:
            return None
        if doc.expires_at is not None and doc.expires_at <= now:
            return None
        tenant_id, email = doc.tenant_id, doc.email.lower()
        revoked, used = await asyncio.gather(
            self._revocations.get(RevocationDoc.id_for_token(doc.token_id), ["_id"]),
            self._use.get(doc.token_id))
        if revoked is not None:
            return None
        tenant = await self._tenant(tenant_id)
        if tenant is None:
            return None
        account = await self._accounts.get(AccountDoc.id_for(tenant_id, email),
                                           ["sessions_valid_after"])
        valid_after = account.sessions_valid_after if account else None
        if valid_after is not None and (doc.created_at is None or doc.created_at < valid_after):
            return None
        async with mongo.unavailable_as_503():
            user = await self._db[mongo.TENANT_USERS].find_one({"_id": f"{tenant_id}:{email}"},
                                                               {"role": 1})
            last = later(doc.last_used_at, used.last_used_at if used else None)
            if last is None or last <= now - LAST_USED_EVERY:
                with contextlib.suppress(DuplicateKeyError):  # two first uses at once
                    await self._db[mongo.TOKEN_USE].update_one(
                        {"_id": doc.token_id},
                        {"$set": {"tenant_id": tenant_id, "last_used_at": now}}, upsert=True)
        role = str(user["role"]) if user and user.get("role") in ("sender", "admin") else None
        issued = frozenset(doc.scopes) & TOKEN_SCOPES
        effective = issued if role == "admin" else issued - {SCOPE_ADMIN}
        return Credentials(tenant=tenant, key_id="", scopes=effective,
                           email=email, token_id=doc.token_id, role=role,
                           token_scopes=issued)

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


def _stored(kind: str, doc: Any) -> StoredTemplate | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("source"), str):
        return None
    updated = doc.get("updated_at")
    return StoredTemplate(kind=kind, source=doc["source"], version=int(doc.get("version") or 1),
                          updated_at=_aware(updated) if updated else None,
                          updated_by=doc.get("updated_by"))


class MongoTemplateStore:
    """``tenants.templates.<kind> = {source, version, updated_at, updated_by}``; one
    single-document update per change (only validated sources ever reach it)."""

    def __init__(self, db: AsyncDatabase[Any], *, changes: TenantChanges | None = None):
        self._col = db[mongo.TENANTS]
        self._changes = changes or TenantChanges()

    async def profile(self, tenant_id: str) -> TenantProfile:
        async with mongo.unavailable_as_503():
            doc = await self._col.find_one({"_id": tenant_id}) or {}
        templates = doc.get("templates") or {}
        stored = {k: t for k, t in ((k, _stored(k, v)) for k, v in templates.items())
                  if t is not None}
        return TenantProfile(
            tenant_id=tenant_id,
            display_name=str(doc.get("display_name") or doc.get("name") or tenant_id),
            footer=doc.get("footer") or None,
            disclaimers=tuple(str(d) for d in doc.get("disclaimers") or () if d),
            templates=stored,
            logo_url=str((doc.get("branding") or {}).get("logo_url") or "") or None)

    async def save(self, tenant_id: str, *, kind: str, source: str, key_id: str,
                   now: datetime) -> StoredTemplate:
        field = f"templates.{kind}"
        async with mongo.unavailable_as_503():
            doc = await self._col.find_one_and_update(
                {"_id": tenant_id},
                {"$set": {f"{field}.source": source, f"{field}.updated_at": now,
                          f"{field}.updated_by": key_id},
                 "$inc": {f"{field}.version": 1}},
                return_document=ReturnDocument.AFTER)
        self._changes.forget(tenant_id)
        stored = _stored(kind, ((doc or {}).get("templates") or {}).get(kind))
        if stored is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return stored

    async def delete(self, tenant_id: str, *, kind: str) -> bool:
        async with mongo.unavailable_as_503():
            res = await self._col.update_one(
                {"_id": tenant_id, f"templates.{kind}": {"$exists": True}},
                {"$unset": {f"templates.{kind}": ""}})
        self._changes.forget(tenant_id)
        return res.modified_count == 1


class MongoSmtpConfigStore:
    """``tenants.smtp``: the tenant's SMTP selection (see ``secmsg.ingest.tenant_smtp``)."""

    def __init__(self, db: AsyncDatabase[Any], *, changes: TenantChanges | None = None):
        self._col = db[mongo.TENANTS]
        self._changes = changes or TenantChanges()

    async def load(self, tenant_id: str) -> SmtpConfig:
        async with mongo.unavailable_as_503():
            doc = await self._col.find_one({"_id": tenant_id}, {"smtp": 1})
        if doc is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        config = SmtpConfig.from_doc(doc.get("smtp"))
        if config.updated_at is not None:
            config = replace(config, updated_at=_aware(config.updated_at))
        return config

    async def save(self, tenant_id: str, config: SmtpConfig, *, key_id: str,
                   now: datetime) -> SmtpConfig:
        async with mongo.unavailable_as_503():
            res = await self._col.update_one(
                {"_id": tenant_id},
                {"$set": {"smtp": {**config.to_doc(), "updated_at": now,
                                   "updated_by": key_id}}})
        self._changes.forget(tenant_id)
        if res.matched_count != 1:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return replace(config, updated_at=now)
