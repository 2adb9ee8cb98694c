"""MongoDB repositories for retrieve.

Reads store's ``messages`` and ingest's ``tenants``; owns ``login_codes``, ``sessions`` and
``rate_limits``. FerretDB has no transactions, so every state change that must be atomic is a
single-document ``findAndModify`` (consume a code, count a rate-limit hit, touch a session).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from secmsg.retrieve.ports import MessageRecord, SessionInfo, SessionRecord
from secmsg.shared import mongo
from secmsg.shared.documents import MailboxDoc, MessageDoc, ReadView, TenantDoc
from secmsg.shared.events import Recipient, StoredObject

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _is_live(doc: MessageDoc, tenant_id: str, address: str, now: datetime) -> bool:
    """Whether one document already read by ``_id`` is live for ``address``: FerretDB uses
    its ``_id`` index only for a filter that is ``{_id: value}`` alone, so a lookup that adds
    the other conditions scans every message; they are checked here instead."""
    return (doc.tenant_id == tenant_id and doc.state == "stored"
            and address in doc.recipient_addresses
            and (doc.expires_at is None or doc.expires_at > now))


def _record(doc: MessageDoc) -> MessageRecord:
    # Small objects' ciphertext lives in the document itself (``inline``), not in S3.
    objects = [StoredObject.model_validate({**o.model_dump(),
                                            "inline": doc.inline.get(o.object_id)})
               for o in doc.objects]
    return MessageRecord(
        message_id=doc.id,
        tenant_id=doc.tenant_id,
        sender=doc.sender,
        recipients=[Recipient(address=r.address, kind=r.kind) for r in doc.recipients],
        subject=doc.subject,
        objects=objects,
        attachment_count=doc.attachment_count or sum(o.role == "attachment" for o in objects),
        total_size=doc.total_size or sum(o.size for o in objects),
        received_at=doc.received_at or datetime.fromtimestamp(0, UTC),
        expires_at=doc.expires_at,
        disclaimer=doc.disclaimer,
    )


def _listed(e: MailboxDoc) -> MessageRecord:
    """A listing entry as the record the pages take (no objects: a list shows none)."""
    return MessageRecord(
        message_id=e.message_id, tenant_id=e.tenant_id, sender=e.sender, recipients=[],
        subject=e.subject, objects=[], attachment_count=e.attachment_count,
        total_size=e.total_size, received_at=e.received_at, expires_at=e.expires_at,
        disclaimer=None, opened=e.opened)


class MongoMessageRepo:
    """Reads store's ``messages`` and ``mailbox`` through the shared read-only views."""

    def __init__(self, db: AsyncDatabase[Doc]):
        self._messages = ReadView(db, MessageDoc)
        self._mailbox = ReadView(db, MailboxDoc)

    async def has_live(self, *, tenant_id: str, address: str, now: datetime) -> bool:
        return bool(await self.list_live(tenant_id=tenant_id, address=address, now=now,
                                         limit=1, after=None))

    async def list_live(self, *, tenant_id: str, address: str, now: datetime, limit: int,
                        after: str | None) -> list[MessageRecord]:
        """Newest first, from the recipient's ``mailbox`` entries: each read is one ``_id``
        range (``MailboxDoc.key_range``), cut at ``after`` (a key), nothing else in the filter.
        Expired entries (until the purge removes them) are skipped here, so a read may be
        followed by another one further down the range."""
        out: list[MessageRecord] = []
        while len(out) < limit:
            want = limit - len(out)
            entries = await self._mailbox.find(
                {"_id": MailboxDoc.key_range(tenant_id, "in", address, after)},
                sort=[("_id", DESCENDING)], limit=want)
            out += [_listed(e) for e in entries if e.address == address.lower()
                    and (e.expires_at is None or e.expires_at > now)]
            if len(entries) < want:
                break
            after = entries[-1].key
        return out

    async def get_live(self, *, tenant_id: str, message_id: str, address: str,
                       now: datetime) -> MessageRecord | None:
        doc = await self._messages.get(message_id)  # by _id alone: _is_live
        return _record(doc) if doc is not None and _is_live(doc, tenant_id, address,
                                                             now) else None

    async def addressed(self, *, tenant_id: str, message_id: str, address: str) -> bool:
        """Whether the message (in any state: revoked and recalled ones too) names them."""
        doc = await self._messages.get(message_id,  # by _id alone: _is_live
                                      ["tenant_id", "recipient_addresses"])
        return (doc is not None and doc.tenant_id == tenant_id
                and address in doc.recipient_addresses)


class MongoTenantRepo:
    """Reads ingest's ``tenants`` through the shared read-only view."""

    def __init__(self, db: AsyncDatabase[Doc]):
        self._tenants = ReadView(db, TenantDoc)

    async def display_name(self, tenant_id: str) -> str | None:
        doc = await self._tenants.get(tenant_id, ["display_name", "name"])
        return None if doc is None else doc.shown_name()


class MongoCodeRepo:
    """One live code per (tenant, address); ``_id`` is ``<tenant>:<address>``.

    Single use is decided by inserting a marker with a unique ``_id`` (code + issue time) into
    ``login_codes_used``: an insert is atomic on every MongoDB-wire server, whereas
    ``find_one_and_delete`` is not on FerretDB 1.x (two concurrent calls can both get the doc).
    """

    def __init__(self, db: AsyncDatabase[Doc]):
        self._col = db[mongo.LOGIN_CODES]
        self._used = db[mongo.LOGIN_CODES_USED]

    async def replace(self, *, tenant_id: str, address: str, code_hash: str,
                      expires_at: datetime, now: datetime) -> None:
        doc = {"tenant_id": tenant_id, "address": address, "code_hash": code_hash,
               "attempts": 0, "expires_at": expires_at, "created_at": now}
        async with mongo.unavailable_as_503():
            await self._col.replace_one({"_id": f"{tenant_id}:{address}"}, doc, upsert=True)

    async def consume(self, *, tenant_id: str, address: str, code_hash: str, now: datetime,
                      max_attempts: int) -> bool:
        key = f"{tenant_id}:{address}"
        async with mongo.unavailable_as_503():
            match = await self._col.find_one({
                "_id": key, "code_hash": code_hash, "expires_at": {"$gt": now},
                "attempts": {"$lt": max_attempts},
            })
            if match is not None:
                issued = match.get("created_at")
                marker = f"{key}:{code_hash}:{issued.isoformat() if issued else ''}"
                try:
                    await self._used.insert_one({"_id": marker, "expires_at": match["expires_at"],
                                                 "used_at": now})
                except DuplicateKeyError:
                    return False  # a concurrent submission of the same code won
                await self._col.delete_one({"_id": key, "code_hash": code_hash})
                return True
            await self._col.update_one({"_id": key}, {"$inc": {"attempts": 1}})
        return False


class MongoSessionRepo:
    """Sessions by token hash. Each keeps its own idle timeout (the tenant policy's at sign-in)
    and ``idle_until``, the instant it dies unless used, so the janitor needs no policy."""

    def __init__(self, db: AsyncDatabase[Doc]):
        self._col = db[mongo.SESSIONS]

    async def create(self, *, token_hash: str, tenant_id: str, address: str, now: datetime,
                     expires_at: datetime, idle_s: int | None = None,
                     user_agent: str | None = None) -> None:
        doc: Doc = {"_id": token_hash, "tenant_id": tenant_id, "address": address,
                    "created_at": now, "last_seen_at": now, "expires_at": expires_at,
                    "user_agent": (user_agent or "")[:256] or None}
        if idle_s is not None:
            doc["idle_s"] = idle_s
            doc["idle_until"] = now + timedelta(seconds=idle_s)
        async with mongo.unavailable_as_503():
            await self._col.insert_one(doc)

    async def touch(self, *, token_hash: str, now: datetime,
                    idle_s: int) -> SessionRecord | None:
        async with mongo.unavailable_as_503():
            # By _id alone (see _is_live); the expiry is checked here.
            doc = await self._col.find_one({"_id": token_hash})
            expires = _aware(doc.get("expires_at")) if doc is not None else None
            if doc is None or expires is None or expires <= now:
                return None
            idle = int(doc.get("idle_s") or idle_s)
            last = _aware(doc.get("last_seen_at")) or now
            if last <= now - timedelta(seconds=idle):
                return None
            # Not conditional: two requests touching at once both extend the same session.
            await self._col.update_one({"_id": token_hash}, {"$set": {
                "last_seen_at": now, "idle_until": now + timedelta(seconds=idle)}})
        return SessionRecord(token_hash=doc["_id"], tenant_id=doc["tenant_id"],
                             address=doc["address"],
                             expires_at=_aware(doc["expires_at"]) or now,
                             created_at=_aware(doc.get("created_at")))

    async def delete(self, token_hash: str) -> None:
        async with mongo.unavailable_as_503():
            await self._col.delete_one({"_id": token_hash})

    async def delete_all(self, *, tenant_id: str, address: str) -> int:
        async with mongo.unavailable_as_503():
            res = await self._col.delete_many({"tenant_id": tenant_id, "address": address})
        return res.deleted_count

    async def list_for(self, *, tenant_id: str, address: str,
                       now: datetime) -> list[SessionInfo]:
        async with mongo.unavailable_as_503():
            docs = await self._col.find(
                {"tenant_id": tenant_id, "address": address, "expires_at": {"$gt": now}},
            ).sort("last_seen_at", -1).to_list(100)
        return [SessionInfo(token_hash=d["_id"], created_at=_aware(d.get("created_at")),
                            last_seen_at=_aware(d.get("last_seen_at")),
                            expires_at=_aware(d.get("expires_at")),
                            user_agent=d.get("user_agent")) for d in docs]

    async def delete_others(self, *, tenant_id: str, address: str, keep: str) -> int:
        async with mongo.unavailable_as_503():
            res = await self._col.delete_many(
                {"tenant_id": tenant_id, "address": address, "_id": {"$ne": keep}})
        return res.deleted_count


class MongoRateLimiter:
    """Fixed windows where each admitted hit claims a numbered slot by INSERT.

    Slot ``n`` of (key, window) is a document with ``_id`` ``<hash>:<window_s>:<window>:<n>``;
    a hit is admitted iff it inserts one of slots 1..limit. A unique insert is atomic on every
    MongoDB-wire server, so at most ``limit`` hits per window get through however many
    replicas race. (``$inc`` counters are not: FerretDB 1.x loses concurrent increments and let
    40 of 40 concurrent hits through a limit of 10.) Refused hits write nothing, so a flood
    stores at most ``limit`` documents per key and window.
    """

    def __init__(self, db: AsyncDatabase[Doc]):
        self._col = db[mongo.RATE_LIMITS]

    async def hit(self, *, key: str, limit: int, window_s: int, now: datetime) -> float | None:
        window = int(now.timestamp()) // window_s
        window_end = datetime.fromtimestamp((window + 1) * window_s, UTC)
        # Hashed so the collection holds no addresses or IPs in clear.
        prefix = f"{hashlib.sha256(key.encode()).hexdigest()[:40]}:{window_s}:{window}:"
        async with mongo.unavailable_as_503():
            # Slots are only ever added, so the count is a lower bound of the next free one:
            # starting there skips the taken slots in one round trip instead of ``limit``.
            taken = await self._col.count_documents(
                {"_id": {"$gte": prefix, "$lt": prefix[:-1] + ";"}})
            for n in range(taken + 1, limit + 1):
                try:
                    await self._col.insert_one({"_id": f"{prefix}{n:06d}",
                                                "expires_at": window_end})
                    return None
                except DuplicateKeyError:
                    continue  # a concurrent hit took this slot; try the next
        return max(1.0, (window_end - now).total_seconds())


class MongoJanitor:
    """Deletes expired sign-in state without relying on TTL indexes (FerretDB 1.x has none).

    Each delete filters on one indexed time field with the same boundary the readers use
    (live means ``expires_at > now`` and ``last_seen_at > now - idle``), and deleting is
    idempotent, so replicas running it at once only repeat work. FerretDB deletes by ``_id``
    after matching: a code re-issued for the same address in that instant could go too (the
    recipient asks again); sessions, used-code markers and rate-limit slots never reuse an
    ``_id``.
    """

    def __init__(self, db: AsyncDatabase[Doc]):
        self._db = db

    async def delete_expired(self, *, now: datetime, session_idle_s: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with mongo.unavailable_as_503():
            for name in _EXPIRING:
                res = await self._db[name].delete_many({"expires_at": {"$lte": now}})
                counts[name] = res.deleted_count
            # Sessions with their own idle timeout carry idle_until; older ones use the default.
            idle = await self._db[mongo.SESSIONS].delete_many(
                {"idle_s": None,
                 "last_seen_at": {"$lte": now - timedelta(seconds=session_idle_s)}})
            own = await self._db[mongo.SESSIONS].delete_many({"idle_until": {"$lte": now}})
            counts[mongo.SESSIONS] += idle.deleted_count + own.deleted_count
        return counts


# Every collection of expiring sign-in state, device codes and single-use markers (TOTP
# steps, redeemed device codes) included: each is cleaned and indexed on ``expires_at``.
_EXPIRING = (mongo.LOGIN_CODES, mongo.LOGIN_CODES_USED, mongo.SESSIONS, mongo.RATE_LIMITS,
             mongo.DEVICE_CODES, mongo.ACCESS_MARKERS)


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    """Indexes for the expiry clean-up: TTL where the server has it, else plain ones that the
    periodic ``MongoJanitor`` pass uses."""
    for name in _EXPIRING:
        try:
            await db[name].create_index([("expires_at", ASCENDING)], expireAfterSeconds=0,
                                        name="expires_at_ttl")
        except OperationFailure as exc:
            log.info("no TTL index on %s (server said %s); periodic clean-up only",
                     name, exc.code)
            await db[name].create_index([("expires_at", ASCENDING)], name="expires_at")
    await db[mongo.SESSIONS].create_index([("last_seen_at", ASCENDING)], name="last_seen_at")
    await db[mongo.SESSIONS].create_index([("idle_until", ASCENDING)], name="idle_until")
    await db[mongo.SESSIONS].create_index([("tenant_id", ASCENDING), ("address", ASCENDING)],
                                          name="tenant_address")
    await db[mongo.TOKENS].create_index([("tenant_id", ASCENDING), ("email", ASCENDING)],
                                        name="tenant_email")
