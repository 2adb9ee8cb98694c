# Over 400 lines: the repositories share the insert-once helpers above them.
"""MongoDB implementations of the store's repositories.

FerretDB 1.x compatible: every guarantee comes from one single-document operation -- a unique
``_id`` (insert = "first one wins", so redelivery is harmless), a conditional update, or an
upsert whose filter refuses to match a final state (the insert then collides on ``_id``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from secmsg.shared import mongo
from secmsg.shared.documents import (
    AuditDoc,
    DeliveryStatusDoc,
    MailboxDoc,
    MessageDoc,
    ReadView,
    TenantDoc,
    UndeliverableDoc,
    mailbox_key,
)
from secmsg.shared.mongo import unavailable_as_503
from secmsg.shared.worker import DeadLetter, DeadLetterRecorded
from secmsg.store import expiry
from secmsg.store.ports import BounceUpdate, DeliveryUpdate, Doc

# Collection names from secmsg.shared.mongo (store tests import them from here).
DELIVERY_STATUS = mongo.DELIVERY_STATUS
DELIVERY_FINAL = mongo.DELIVERY_FINAL
PURGE_CLAIMS = mongo.PURGE_CLAIMS
# A deferral never replaces these. ``bounced`` is not first-wins like the other two: it
# overrides ``sent`` (see ``MongoDeliveryRepo``).
FINAL_DELIVERY_STATES = ("sent", "failed", "bounced")
DUPLICATE_KEY = 11000
# The message fields its listing entries are made of (``MailboxDoc.entries``).
_LISTED = {"tenant_id": 1, "sender": 1, "recipients": 1, "recipient_addresses": 1,
           "subject": 1, "attachment_count": 1, "total_size": 1, "received_at": 1,
           "expires_at": 1}


def _duplicates(exc: BulkWriteError) -> set[int]:
    """Indexes of the operations that collided on ``_id``; any other write error re-raises."""
    errors = exc.details.get("writeErrors", [])
    if exc.details.get("writeConcernErrors") or any(
            e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return {e["index"] for e in errors}


async def _insert_once(col: AsyncCollection[Any], doc: Mapping[str, Any]) -> bool:
    """Insert by unique ``_id``; False when it is already there (the redelivery case)."""
    try:
        async with unavailable_as_503():
            await col.insert_one(dict(doc))
    except DuplicateKeyError:
        return False
    return True


async def _insert_new(col: AsyncCollection[Any], docs: list[Doc]) -> set[int]:
    """Insert all (unordered, one round trip); the indexes of those already there."""
    if not docs:
        return set()
    try:
        async with unavailable_as_503():
            await col.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        return _duplicates(exc)
    return set()


async def _put_many(col: AsyncCollection[Any], docs: Mapping[str, Mapping[str, Any]],
                    filters: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Create or ``$set`` several documents (by ``_id``) in one or two round trips.

    Not ``bulk_write`` of conditional upserts: FerretDB 1.x stops an update batch at its
    first error even when unordered, and a conditional upsert that does not match an
    existing document is such an error. So: insert all (unordered inserts do go on past a
    collision), then update the ones that existed, under ``filters[_id]`` if given -- a
    plain update never collides.
    """
    ids = list(docs)
    existed = await _insert_new(col, [{"_id": i, **docs[i]} for i in ids])
    ops = [UpdateOne({**(filters or {}).get(ids[n], {}), "_id": ids[n]},
                     {"$set": dict(docs[ids[n]])}) for n in sorted(existed)]
    if ops:
        async with unavailable_as_503():
            await col.bulk_write(ops, ordered=False)


async def ensure_indexes(db: AsyncDatabase[Any]) -> None:
    async with unavailable_as_503():
        # The indexes other services' reads rely on (secmsg.shared.documents), then our own.
        for view in (MessageDoc, AuditDoc, DeliveryStatusDoc):
            for index in view.INDEXES:
                await db[view.COLLECTION].create_index(list(index.keys), name=index.name,
                                                       unique=index.unique)
        await db[PURGE_CLAIMS].create_index(
            [("message_id", ASCENDING), ("gen", ASCENDING)], name="message_gen")
        # The retention purge (``received_before``): {tenant_id, state: {$in}, received_at:
        # {$lt}} sorted by received_at -- on MongoDB an index range over the messages due, not
        # a walk of the tenant's whole history (FerretDB/SQLite scans anyway: docs/cost.md).
        await db[mongo.MESSAGES].create_index(
            [("tenant_id", ASCENDING), ("state", ASCENDING), ("received_at", ASCENDING)],
            name="tenant_state_received")


# Indexes of ``messages`` an earlier release created and nothing reads through any more:
# every insert still pays for them. Dropped by name by the upgrade Job
# (``secmsg.ops.migrate``), never at a service's start-up. ``expiry`` (expires_at, state):
# the expiry purge reads its buckets by ``_id`` instead.
RETIRED_MESSAGE_INDEXES: tuple[str, ...] = ("expiry",)


async def drop_retired_indexes(db: AsyncDatabase[Any]) -> list[str]:
    """Drop the ``RETIRED_MESSAGE_INDEXES`` that exist; returns ``collection.index`` of each."""
    dropped: list[str] = []
    col = db[mongo.MESSAGES]
    async with unavailable_as_503():
        names = [ix["name"] async for ix in await col.list_indexes()]
        for name in RETIRED_MESSAGE_INDEXES:
            if name in names:
                await col.drop_index(name)
                dropped.append(f"{mongo.MESSAGES}.{name}")
    return dropped


async def ping(db: AsyncDatabase[Any]) -> None:
    async with unavailable_as_503():
        await db.command("ping")


class MongoMessageRepo:
    """``messages``, and with them their listing entries in ``mailbox`` (``MailboxDoc``): the
    entries are written before the message (a crash in between is repaired by the
    redelivery), removed on recall and purge, and follow an expiry change.

    Also ``expiry_buckets``: the ids of the stored messages due in each UTC minute
    (``expiry:<minute>``, see ``secmsg.store.expiry``) and the purge's cursor, so the expiry
    purge reads documents by exact ``_id`` only. A bucket may hold ids that are no longer due
    then (recalled, purged, expiry changed): the purge checks each message and drops those.
    What must never happen is a due message missing from every bucket not yet read, so ids
    are added before the write that makes them due (record) or right after it (an expiry
    change), and removed only after the message's own state says so.
    """

    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[mongo.MESSAGES]
        self._mailbox = db[mongo.MAILBOX]
        self._buckets = db[mongo.EXPIRY_BUCKETS]

    # -- expiry buckets -------------------------------------------------------------------

    async def _file(self, by_minute: Mapping[datetime, Sequence[str]]) -> None:
        """Add ids to their minutes' buckets: one upsert per bucket. A new bucket also makes
        sure the purge's cursor exists (at the current minute at the latest), so a first
        purge run long after the first messages still starts before their buckets."""
        created = False
        for minute in sorted(by_minute):
            flt = {"_id": expiry.bucket_id(minute)}
            add = {"$addToSet": {"ids": {"$each": list(by_minute[minute])}}}
            try:
                async with unavailable_as_503():
                    res = await self._buckets.update_one(flt, add, upsert=True)
                created = created or res.upserted_id is not None
            except DuplicateKeyError:  # two first writes raced; the bucket exists now
                async with unavailable_as_503():
                    await self._buckets.update_one(flt, add)
        if created:
            await _insert_once(self._buckets, {"_id": expiry.CURSOR_ID,
                                               "next": expiry.minute_of(datetime.now(UTC))})

    async def _file_docs(self, docs: Sequence[Mapping[str, Any]]) -> None:
        now = datetime.now(UTC)
        by_minute: dict[datetime, list[str]] = defaultdict(list)
        for d in docs:
            if d.get("state") in ("stored", "purging") and d.get("expires_at") is not None:
                by_minute[expiry.bucket_minute(d["expires_at"], now=now)].append(d["_id"])
        await self._file(by_minute)

    async def expiry_cursor(self, *, start: datetime) -> datetime:
        """The first minute whose bucket is not closed yet; ``start`` on the very first call."""
        async with unavailable_as_503():
            doc = await self._buckets.find_one({"_id": expiry.CURSOR_ID})
        if doc is None:
            await _insert_once(self._buckets, {"_id": expiry.CURSOR_ID,
                                               "next": expiry.minute_of(start)})
            async with unavailable_as_503():
                doc = await self._buckets.find_one({"_id": expiry.CURSOR_ID})
        assert doc is not None  # inserted just above (or by a replica racing us)
        return expiry.aware(doc["next"])

    async def expiry_bucket(self, minute: datetime) -> list[str] | None:
        """The ids filed under ``minute``; None when it has no bucket."""
        async with unavailable_as_503():
            doc = await self._buckets.find_one({"_id": expiry.bucket_id(minute)})
        return None if doc is None else list(doc.get("ids", []))

    async def expiry_done(self, minute: datetime, message_ids: Sequence[str]) -> None:
        """Take ids out of a bucket (purged, or no longer due in that minute)."""
        if message_ids:
            async with unavailable_as_503():
                await self._buckets.update_one({"_id": expiry.bucket_id(minute)},
                                               {"$pullAll": {"ids": list(message_ids)}})

    async def expiry_close(self, minutes: Sequence[datetime], *, next_minute: datetime) -> None:
        """Delete finished buckets of minutes no id is filed under any more; move the cursor
        to ``next_minute`` (never back)."""
        async with unavailable_as_503():
            for m in minutes:
                await self._buckets.delete_one({"_id": expiry.bucket_id(m)})
            await self._buckets.update_one({"_id": expiry.CURSOR_ID},
                                           {"$max": {"next": expiry.minute_of(next_minute)}},
                                           upsert=True)

    async def backfill_expiry_buckets(self, *, batch: int = 500) -> int:
        """File every stored (or half-purged) message with an expiry in its bucket
        (``secmsg.ops.migrate``: messages recorded before the buckets existed); idempotent,
        and a past expiry goes under the current minute. Creates the purge cursor at the
        current minute if there is none, so no bucket written here is behind it. Returns
        the messages filed."""
        await self.expiry_cursor(start=datetime.now(UTC))
        filed = 0
        async with unavailable_as_503():
            cursor = self._col.find({"state": {"$in": ["stored", "purging"]}},
                                    {"state": 1, "expires_at": 1}, batch_size=batch)
            chunk: list[Doc] = []
            async for doc in cursor:
                if doc.get("expires_at") is None:
                    continue
                chunk.append(doc)
                if len(chunk) >= batch:
                    await self._file_docs(chunk)
                    filed += len(chunk)
                    chunk = []
            if chunk:
                await self._file_docs(chunk)
                filed += len(chunk)
        return filed

    # -- messages ---------------------------------------------------------------------------

    async def get(self, message_id: str) -> Doc | None:
        async with unavailable_as_503():
            return await self._col.find_one({"_id": message_id})

    async def insert(self, doc: Mapping[str, Any]) -> bool:
        return await _insert_once(self._col, doc)

    async def insert_many(self, docs: Sequence[Mapping[str, Any]]) -> set[int]:
        entries = [e for d in docs if d.get("state") == "stored" for e in MailboxDoc.entries(d)]
        await _insert_new(self._mailbox, entries)
        # Filed before the message exists: a crash in between leaves an id the purge drops.
        await self._file_docs(docs)
        collided = await _insert_new(self._col, [dict(d) for d in docs])
        if collided:
            # Already on record: a redelivery (its entries are there already) or a recall
            # tombstone, whose entries must not stay.
            async with unavailable_as_503():
                on_file = await self._col.find(
                    {"_id": {"$in": [docs[n]["_id"] for n in collided]}},
                    {"state": 1}).to_list(None)
            gone = {d["_id"] for d in on_file if d.get("state") != "stored"}
            await self._unlist([d for d in docs if d["_id"] in gone])
        return collided

    async def _listed(self, message_id: str) -> list[Doc]:
        """The message (the fields its entries are made of), by ``_id`` alone."""
        async with unavailable_as_503():
            doc = await self._col.find_one({"_id": message_id}, _LISTED)
        return [] if doc is None else [doc]

    async def _unlist(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Out of the recipients' boxes; the sender's ``sent`` entry stays (the sent list
        shows recalled and expired messages too, their slips still open)."""
        ids = [e["_id"] for d in docs for e in MailboxDoc.entries(d) if e["box"] == "in"]
        if ids:
            async with unavailable_as_503():
                await self._mailbox.delete_many({"_id": {"$in": ids}})

    async def backfill_mailbox(self, *, batch: int = 500) -> int:
        """Listing entries for every stored message (``secmsg.ops.migrate``: messages recorded
        before the ``mailbox`` collection existed); idempotent. Returns the entries added."""
        added = 0
        async with unavailable_as_503():
            cursor = self._col.find({"state": "stored"}, _LISTED, batch_size=batch)
            chunk: list[Doc] = []
            async for doc in cursor:
                chunk.extend(MailboxDoc.entries(doc))
                if len(chunk) >= batch:
                    added += len(chunk) - len(await _insert_new(self._mailbox, chunk))
                    chunk = []
            if chunk:
                added += len(chunk) - len(await _insert_new(self._mailbox, chunk))
        return added

    async def mark_opened(self, marks: Sequence[tuple[str, datetime]]) -> None:
        """By ``_id`` alone (no upsert: nothing to collide on, FerretDB goes on past it)."""
        if marks:
            async with unavailable_as_503():
                await self._mailbox.bulk_write(
                    [UpdateOne({"_id": entry}, {"$set": {"opened": True},
                                                "$min": {"opened_at": at}})
                     for entry, at in marks], ordered=False)

    async def find_many(self, message_ids: Sequence[str]) -> list[Doc]:
        async with unavailable_as_503():
            cursor = self._col.find({"_id": {"$in": list(message_ids)}},
                                    {"tenant_id": 1, "state": 1, "objects.key": 1})
            return [d async for d in cursor]

    async def mark_purging(self, message_id: str, *, owner: str,
                           lease_until: datetime) -> None:
        async with unavailable_as_503():
            await self._col.update_one(
                {"_id": message_id, "state": {"$in": ["stored", "purging"]}},
                {"$set": {"state": "purging", "lease_until": lease_until,
                          "purge_owner": owner}})

    async def mark_purged(self, message_id: str, *, now: datetime) -> None:
        await self._unlist(await self._listed(message_id))
        async with unavailable_as_503():
            await self._col.update_one(
                {"_id": message_id},
                {"$set": {"state": "purged", "purged_at": now},
                 "$unset": {"lease_until": "", "purge_owner": "", "inline": ""}})

    async def mark_recalled(self, message_id: str, *, at: datetime, by: str) -> None:
        listed = await self._listed(message_id)
        await self._unlist(listed)
        async with unavailable_as_503():
            await self._col.update_one(
                {"_id": message_id},
                {"$set": {"state": "recalled", "recalled_at": at, "recalled_by": by},
                 "$unset": {"lease_until": "", "purge_owner": "", "inline": ""}})
        # Recalled is final: nothing to purge any more (a stale id would only be dropped).
        for d in listed:
            if d.get("expires_at") is not None:
                await self.expiry_done(expiry.bucket_minute(d["expires_at"], now=at),
                                       [message_id])

    async def set_expiry(self, message_id: str, *, expires_at: datetime | None,
                         changed_at: datetime) -> bool:
        """The message, its listing entries, then its expiry bucket: filed under the new
        minute after the message says so, taken out of the old one after that. A concurrent
        change may have taken it out of the bucket it is due in again, so that is re-read."""
        before = await self._listed(message_id)
        async with unavailable_as_503():
            res = await self._col.update_one(
                {"_id": message_id, "state": "stored",
                 "$or": [{"expiry_changed_at": None},
                         {"expiry_changed_at": {"$lte": changed_at}}]},
                {"$set": {"expires_at": expires_at, "expiry_changed_at": changed_at}})
            if res.matched_count:
                ids = [e["_id"] for d in before for e in MailboxDoc.entries(d)]
                if ids:
                    await self._mailbox.update_many({"_id": {"$in": ids}},
                                                    {"$set": {"expires_at": expires_at}})
        if not res.matched_count:
            return False
        now = datetime.now(UTC)
        new = None if expires_at is None else expiry.bucket_minute(expires_at, now=now)
        if new is not None:
            await self._file({new: [message_id]})
        old_at = before[0].get("expires_at") if before else None
        old = None if old_at is None else expiry.bucket_minute(old_at, now=now)
        if old is not None and old != new:
            await self.expiry_done(old, [message_id])
            async with unavailable_as_503():
                doc = await self._col.find_one({"_id": message_id},
                                               {"state": 1, "expires_at": 1})
            if (doc is not None and doc.get("state") == "stored"
                    and doc.get("expires_at") is not None
                    and expiry.bucket_minute(doc["expires_at"], now=now) == old):
                await self._file({old: [message_id]})
        return True

    async def count_stored(self, tenant_id: str) -> int:
        async with unavailable_as_503():
            return await self._col.count_documents({"tenant_id": tenant_id, "state": "stored"})

    async def received_before(self, tenant_id: str, *, before: datetime,
                              limit: int) -> list[Doc]:
        async with unavailable_as_503():
            cursor = self._col.find(
                {"tenant_id": tenant_id, "state": {"$in": ["stored", "purging"]},
                 "received_at": {"$lt": before}},
                {"tenant_id": 1, "state": 1}, sort=[("received_at", ASCENDING)], limit=limit)
            return [d async for d in cursor]

    async def stored_page(self, tenant_id: str, *, after: str | None,
                          limit: int) -> list[Doc]:
        flt: dict[str, Any] = {"tenant_id": tenant_id, "state": "stored"}
        if after is not None:
            flt["_id"] = {"$gt": after}
        async with unavailable_as_503():
            cursor = self._col.find(flt, {"objects.object_id": 1, "objects.wrapped_key": 1},
                                    sort=[("_id", ASCENDING)], limit=limit)
            return [d async for d in cursor]

    async def set_wrapped_keys(self, message_id: str,
                               changes: Mapping[int, tuple[str, str]]) -> bool:
        flt: dict[str, Any] = {"_id": message_id, "state": "stored"}
        new: dict[str, str] = {}
        for i, (old, replacement) in changes.items():
            flt[f"objects.{i}.wrapped_key"] = old
            new[f"objects.{i}.wrapped_key"] = replacement
        async with unavailable_as_503():
            res = await self._col.update_one(flt, {"$set": new})
        return res.matched_count > 0


class MongoPurgeClaims:
    """Purge claims as insert-only documents ``<message_id>:<generation>``.

    FerretDB 1.x applies a conditional update as "query, then write by _id" without
    re-checking the filter, so two replicas can both win a findAndModify. A unique ``_id`` is
    atomic everywhere: generation *n+1* can be inserted once, and only after generation *n*'s
    lease has run out (its holder died).
    """

    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[PURGE_CLAIMS]

    async def claim(self, message_id: str, *, owner: str, now: datetime,
                    lease_until: datetime) -> bool:
        async with unavailable_as_503():
            latest = await self._col.find_one({"message_id": message_id},
                                              sort=[("gen", DESCENDING)])
        if latest is not None and latest["lease_until"] > now:
            return False
        gen = (latest["gen"] if latest else 0) + 1
        return await _insert_once(self._col, {"_id": f"{message_id}:{gen}",
                                              "message_id": message_id, "gen": gen,
                                              "owner": owner, "lease_until": lease_until})

    async def release(self, message_id: str) -> None:
        async with unavailable_as_503():
            await self._col.delete_many({"message_id": message_id})


class MongoDeliveryRepo:
    """``delivery_status`` plus an insert-only ``delivery_final`` record per recipient.

    On MongoDB the conditional upsert alone keeps final states final. FerretDB 1.x does not
    re-check an update's filter when it writes, so a deferral racing a final state could land
    on top of it; the insert-only record (first final wins, atomically) lets the loser of such
    a race put the final state back.
    """

    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[DELIVERY_STATUS]
        self._final = db[DELIVERY_FINAL]

    async def _standing(self, delivery_ids: Sequence[str]) -> dict[str, Doc]:
        """The state that stands per recipient, from the insert-only records: a hard bounce,
        else a soft one, else the first final state; recipients with none are left out."""
        ids = list(delivery_ids)
        lookup = ids + [bounce_record_id(i, hard=h) for i in ids for h in (True, False)]
        async with unavailable_as_503():
            found = {d.pop("_id"): d for d in
                     await self._final.find({"_id": {"$in": lookup}}).to_list(None)}
        out: dict[str, Doc] = {}
        for i in ids:
            rec = (found.get(bounce_record_id(i, hard=True))
                   or found.get(bounce_record_id(i, hard=False)) or found.get(i))
            if rec is not None:
                out[i] = rec
        return out

    async def _write(self, delivery_id: str, fields: Mapping[str, Any]) -> None:
        try:
            async with unavailable_as_503():
                await self._col.update_one({"_id": delivery_id}, {"$set": dict(fields)},
                                           upsert=True)
        except DuplicateKeyError:  # two first writes raced; the document exists now
            async with unavailable_as_503():
                await self._col.update_one({"_id": delivery_id}, {"$set": dict(fields)})

    async def _restore_final(self, delivery_id: str) -> bool:
        final = (await self._standing([delivery_id])).get(delivery_id)
        if final is None:
            return False
        await self._write(delivery_id, final)
        return True

    async def record(self, *, delivery_id: str, fields: Mapping[str, Any], final: bool,
                     attempt: int) -> bool:
        if final:
            if not await _insert_once(self._final, {"_id": delivery_id, **fields}):
                # Another final state is on file; make sure the status shows it (a crash may
                # have come between the two writes) and report this one as not applied.
                await self._restore_final(delivery_id)
                return False
            await self._write(delivery_id, fields)
            return True
        flt: dict[str, Any] = {"_id": delivery_id,
                               "state": {"$nin": list(FINAL_DELIVERY_STATES)}}
        # A late deferral from an earlier attempt must not roll a newer one back.
        flt["attempt"] = {"$lte": attempt}
        try:
            async with unavailable_as_503():
                await self._col.update_one(flt, {"$set": dict(fields)}, upsert=True)
        except DuplicateKeyError:
            # The filter did not match the existing document: a final state or a later
            # attempt is on file, and that one stands.
            return False
        return not await self._restore_final(delivery_id)

    async def record_many(self, updates: Sequence[DeliveryUpdate],
                          bounces: Sequence[BounceUpdate] = ()) -> list[bool]:
        """``record`` for a batch in a handful of round trips instead of two or more per event.

        The same steps in the same order as ``record``, each for the whole batch: the final
        states into ``delivery_final`` (a collision means an earlier final won); the status
        documents (finals unconditionally, deferrals only over a non-final state of no later
        attempt); then, for the deferrals, the collided finals and the bounces, the standing
        records are read and put back on the status -- after the deferrals were written, so a
        deferral that raced a final state on FerretDB still ends under it.

        Bounces break "first final wins" on purpose: a bounce report arrives after the server
        accepted the notification (``sent``) and is the truer state. Each bounce is kept
        insert-only as ``bounce:<hard|soft>:<delivery id>`` (first of each severity wins) and
        also offered to ``delivery_final`` under the plain delivery id, so that a ``sent``
        arriving after its bounce (notify republishing after a crash) collides, is checked,
        and ends under the bounce. The standing state is a hard bounce, else a soft one, else
        the first final state.

        A deferral that updated an existing document is reported applied unless a final state
        overrules it: an unordered bulk update does not say which of its filters matched. A
        final state is applied when it is the recipient's first one (even if a bounce then
        stands over it). Returns one flag per update, then one per bounce (True: its record
        is new).
        """
        ids = [u.delivery_id for u in updates]
        if len(set(ids)) != len(ids):
            raise ValueError("record_many takes at most one update per delivery id")
        bounce_ids = [bounce_record_id(b.delivery_id, hard=b.hard) for b in bounces]
        if len(set(bounce_ids)) != len(bounce_ids):
            raise ValueError("record_many takes at most one bounce per recipient and severity")
        finals = [u for u in updates if u.final]
        records = ([{"_id": u.delivery_id, **u.fields} for u in finals]
                   + [{"_id": r, **b.fields} for r, b in zip(bounce_ids, bounces, strict=True)]
                   + [{"_id": b.delivery_id, **b.fields} for b in bounces])
        clashes = await _insert_new(self._final, records)
        collided = {finals[k].delivery_id for k in clashes if k < len(finals)}
        new_bounces = [len(finals) + k not in clashes for k in range(len(bounces))]
        writes = {u.delivery_id: u.fields for u in updates if u.delivery_id not in collided}
        filters = {u.delivery_id: {"state": {"$nin": list(FINAL_DELIVERY_STATES)},
                                   "attempt": {"$lte": u.attempt}}
                   for u in updates if not u.final}
        if writes:
            await _put_many(self._col, writes, filters)
        check = collided | set(filters) | {b.delivery_id for b in bounces}
        overruled: set[str] = set(collided)
        if check:
            restore = await self._standing(sorted(check))
            # A final state that was new stays "applied" even under a bounce: it was the
            # recipient's first final state (the delivery figures count it as sent).
            overruled |= {i for i in restore if i in filters}
            if restore:
                await _put_many(self._col, restore)
        return [i not in overruled for i in ids] + new_bounces


def bounce_record_id(delivery_id: str, *, hard: bool) -> str:
    # The prefix keeps these apart from the plain ``<message_id>:<address>`` records.
    return f"bounce:{'hard' if hard else 'soft'}:{delivery_id}"


class MongoAuditRepo:
    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[mongo.AUDIT]

    async def insert(self, doc: Mapping[str, Any]) -> bool:
        return await _insert_once(self._col, doc)

    async def insert_many(self, docs: Sequence[Mapping[str, Any]]) -> int:
        return len(docs) - len(await _insert_new(self._col, [dict(d) for d in docs]))

    async def migrate_ids(self, messages: MongoMessageRepo, *, batch: int = 500) -> int:
        """``secmsg.ops.migrate``: documents written before ``_id``s were tenant- and
        time-first get ``AuditDoc.id_for`` (inserted anew, then the old one deleted: a crash
        in between is finished by the next run), and every ``message.opened`` on file sets
        its read mark on the reader's ``mailbox`` entry. Idempotent; how many were moved."""
        moved, last = 0, ""
        received: dict[str, datetime | None] = {}
        while True:
            async with unavailable_as_503():
                page = await self._col.find({"_id": {"$gt": last}}).sort(
                    "_id", ASCENDING).limit(batch).to_list(None)
            if not page:
                return moved
            last = str(page[-1]["_id"])
            old = [d for d in page if d.get("tenant_id") and d.get("at")
                   and not AuditDoc.is_current_id(d["_id"], d["tenant_id"])]
            if old:
                await _insert_new(self._col, [
                    {**d, "_id": AuditDoc.id_for(d["tenant_id"], d["at"], str(d["_id"])),
                     "event_id": d.get("event_id") or str(d["_id"])} for d in old])
                async with unavailable_as_503():
                    await self._col.delete_many({"_id": {"$in": [d["_id"] for d in old]}})
                moved += len(old)
            marks: list[tuple[str, datetime]] = []
            for d in page:
                if d.get("kind") != "message.opened" or not d.get("recipient"):
                    continue
                mid = str(d.get("message_id") or "")
                if mid not in received:
                    msg = await messages.get(mid)
                    received[mid] = msg.get("received_at") if msg else None
                at = received[mid]
                if at is not None:
                    marks.append((MailboxDoc.prefix(d["tenant_id"], "in", d["recipient"])
                                  + mailbox_key(at, mid), d["at"]))
            await messages.mark_opened(marks)


class MongoUndeliverableRepo:
    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[mongo.UNDELIVERABLE]

    async def add_many(self, docs: Sequence[Mapping[str, Any]]) -> int:
        return len(docs) - len(await _insert_new(self._col, [dict(d) for d in docs]))

    async def remove(self, tenant_id: str, address: str) -> bool:
        async with unavailable_as_503():
            res = await self._col.delete_one({"_id": UndeliverableDoc.id_for(tenant_id, address),
                                              "tenant_id": tenant_id})
        return res.deleted_count == 1


class MongoTenantPolicies:
    """Reads ``tenants.policy`` (ingest writes it) through the shared read-only view."""

    def __init__(self, db: AsyncDatabase[Any]):
        self._tenants = ReadView(db, TenantDoc)

    async def retention_days(self) -> list[tuple[str, int]]:
        docs = await self._tenants.find({"policy.retention_days": {"$gt": 0}},
                                        ["policy.retention_days"])
        out = []
        for d in docs:
            days = d.policy.get("retention_days")
            if isinstance(days, int) and not isinstance(days, bool) and days > 0:
                out.append((d.id, days))
        return out


class MongoRotationRepo:
    """``key_rotations``: the re-wrap job creates and updates it (ingest keeps the request
    in its ``tenants`` document and reads the progress through ``KeyRotationDoc``)."""

    def __init__(self, db: AsyncDatabase[Any]):
        self._col = db[mongo.KEY_ROTATIONS]

    async def get(self, rotation_id: str) -> Doc | None:
        async with unavailable_as_503():
            return await self._col.find_one({"_id": rotation_id})

    async def create(self, doc: Mapping[str, Any]) -> bool:
        return await _insert_once(self._col, doc)

    async def update(self, rotation_id: str, fields: Mapping[str, Any]) -> None:
        async with unavailable_as_503():
            await self._col.update_one({"_id": rotation_id}, {"$set": dict(fields)})


_SEQ_ID = re.compile(r"([^:]+):([1-9][0-9]{0,19})")
LETTER_SCAN = 5000  # dead letters read at most per list request (the answer's ``next`` resumes)


def letter_key(letter_id: str) -> str:
    """The ``_id`` of a letter: ``<stream>:<sequence>`` with the sequence 20 digits wide, so
    ``_id`` order is stream order (newest last within a stream) and a listing page is one
    ``_id`` range; any other id (``<stream>:x<uuid>``) as it is."""
    m = _SEQ_ID.fullmatch(letter_id)
    return f"{m[1]}:{int(m[2]):020d}" if m else letter_id


class MongoDeadLetterRepo:
    """``dead_letters``, store's: its own workers' letters (``record``, the ``EventWorker``
    sink) and every other worker's, handed over as ``DeadLetterRecorded`` (``keep``). A dead
    letter recorded before its ``state`` field existed counts as ``open``. ``_id`` =
    ``letter_key(letter.id)``; lookups take the short form (``SECMSG:42``) too."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._col = db[mongo.DEAD_LETTERS]

    async def record(self, letter: DeadLetter) -> None:
        await self.keep(DeadLetterRecorded.of(letter))

    async def keep(self, letter: DeadLetterRecorded) -> None:
        """Insert once by id: a redelivery of the same letter changes nothing."""
        doc = letter.document()
        await _insert_once(self._col, {**doc, "_id": letter_key(doc["_id"])})

    @staticmethod
    def _state(state: str) -> dict[str, Any]:
        return {"state": {"$in": [state, None]}} if state == "open" else {"state": state}

    @staticmethod
    def _wanted(doc: Doc, service: str | None, state: str | None) -> bool:
        return ((service is None or doc.get("service") == service)
                and (state is None or (doc.get("state") or "open") == state))

    async def find(self, *, service: str | None, state: str | None, limit: int,
                   after: str | None = None) -> tuple[list[Doc], str | None]:
        """Newest first (``_id`` descending), each read one ``_id`` range below ``after``
        sorted and limited -- no field in the filter: service and state are checked here,
        over at most ``LETTER_SCAN`` letters a request. The second value is where the next
        page starts (None at the end)."""
        out: list[Doc] = []
        bound = letter_key(after) if after else None
        scanned, read = 0, limit + 1  # one more than a page: "is there a next?" needs no read
        while True:
            ids: dict[str, str] = {"$gte": ""} if bound is None else {"$gte": "", "$lt": bound}
            async with unavailable_as_503():
                page = await self._col.find({"_id": ids}).sort("_id", DESCENDING).limit(
                    read).to_list(None)
            for doc in page:
                scanned += 1
                if self._wanted(doc, service, state):
                    out.append(doc)
                    if len(out) == limit:
                        end = doc is page[-1] and len(page) < read
                        return out, None if end else str(doc["_id"])
            if len(page) < read:
                return out, None
            bound = str(page[-1]["_id"])
            if scanned >= LETTER_SCAN:
                return out, bound

    @staticmethod
    def _id(letter_id: str) -> dict[str, Any]:
        # Dead letters written before ids were ``<stream>:<seq>`` have ObjectIds (or, moved
        # by the migration, ``legacy:<hex>``); the short ``<stream>:<seq>`` form is the id
        # from before the sequence was padded.
        forms: list[Any] = list(dict.fromkeys([letter_id, letter_key(letter_id)]))
        if ObjectId.is_valid(letter_id):
            forms += [ObjectId(letter_id), f"legacy:{letter_id}"]
        return {"_id": forms[0]} if len(forms) == 1 else {"_id": {"$in": forms}}

    async def get(self, letter_id: str) -> Doc | None:
        async with unavailable_as_503():
            return await self._col.find_one(self._id(letter_id))

    async def migrate_ids(self) -> int:
        """``secmsg.ops.migrate``: letters whose ``_id`` is not ``letter_key`` (the short
        ``<stream>:<seq>``, or an ObjectId: ``legacy:<hex>``) get it; idempotent (insert the
        new, then delete the old). How many were moved. Reads them all: an upgrade step."""
        async with unavailable_as_503():
            docs = await self._col.find({}, {"_id": 1}).to_list(None)
        moved = 0
        for d in docs:
            old = d["_id"]
            new = f"legacy:{old}" if isinstance(old, ObjectId) else letter_key(str(old))
            if new == old:
                continue
            async with unavailable_as_503():
                full = await self._col.find_one({"_id": old})
                if full is None:
                    continue
                await _insert_new(self._col, [{**full, "_id": new}])
                await self._col.delete_one({"_id": old})
            moved += 1
        return moved

    async def update(self, letter_id: str, fields: Mapping[str, Any]) -> None:
        async with unavailable_as_503():
            await self._col.update_one(self._id(letter_id), {"$set": dict(fields)})

    async def open_counts(self) -> dict[str, int]:
        async with unavailable_as_503():
            services = await self._col.distinct("service")
            return {str(s): await self._col.count_documents({"service": s, **self._state("open")})
                    for s in services}
