"""The expiry purge reads only what it can name by ``_id``: the buckets of the minutes that
have come (``expiry_buckets``) and each message filed there. Against real FerretDB and S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from secmsg.ops.migrate import migrate
from secmsg.shared import bus, mongo
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.events import MessageRecalled
from secmsg.shared.settings import CommonSettings
from secmsg.store import control, expiry, service
from secmsg.store.adapters.mongo import MongoAuditRepo, MongoMessageRepo, MongoPurgeClaims
from tests.store.helpers import object_exists, record_staged


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _bucket(mongo_db: Any, minute: datetime) -> list[str] | None:
    doc = await mongo_db[mongo.EXPIRY_BUCKETS].find_one({"_id": expiry.bucket_id(minute)})
    return None if doc is None else sorted(doc["ids"])


def _purge(repo: Any, claims: Any, blobs: S3BlobStore, **kw: Any) -> Any:
    return service.purge_expired(messages=repo, claims=claims, blobs=blobs,
                                 owner=kw.pop("owner", "r"), lease_s=30,
                                 limit=kw.pop("limit", 100), **kw)


async def test_purge_reads_messages_and_buckets_by_exact_id_only(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    now = datetime.now(UTC)
    due = await record_staged(blobs, settings, publisher, repo,
                              expires_at=now - timedelta(minutes=3))
    later = await record_staged(blobs, settings, publisher, repo,
                                expires_at=now + timedelta(days=2))
    # Filed as recorded: a past expiry under the current minute, the other under its own.
    assert due.message_id in (await _bucket(mongo_db, now) or [])
    assert await _bucket(mongo_db, now + timedelta(days=2)) == [later.message_id]

    rec = Recorder()
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, tz_aware=True,
                                                     event_listeners=[rec])
    try:
        db = client[settings.mongo_db]
        assert await _purge(MongoMessageRepo(db), MongoPurgeClaims(db), blobs) == 1
    finally:
        await client.close()
    reads = [c for c in rec.commands if "find" in c]
    assert reads, rec.commands
    for c in reads:
        if c["find"] in (mongo.MESSAGES, mongo.EXPIRY_BUCKETS):
            assert set(c["filter"]) == {"_id"} and isinstance(c["filter"]["_id"], str), c
    on_messages = [c for c in rec.commands
                   if c.get("update") == mongo.MESSAGES or c.get("find") == mongo.MESSAGES]
    assert on_messages  # it did read and write the message, by its id
    assert (await repo.get(due.message_id))["state"] == "purged"
    assert (await repo.get(later.message_id))["state"] == "stored"


async def test_expiry_changes_and_recall_move_the_message_between_buckets(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo, claims = MongoMessageRepo(mongo_db), MongoPurgeClaims(mongo_db)
    now = datetime.now(UTC)
    soon = now + timedelta(hours=1)
    postponed = await record_staged(blobs, settings, publisher, repo, expires_at=soon)
    brought_forward = await record_staged(blobs, settings, publisher, repo,
                                          expires_at=now + timedelta(days=3))
    recalled = await record_staged(blobs, settings, publisher, repo, expires_at=soon)
    assert await _bucket(mongo_db, soon) == sorted([postponed.message_id,
                                                    recalled.message_id])

    far = now + timedelta(days=5)
    assert await repo.set_expiry(postponed.message_id, expires_at=far, changed_at=now)
    assert await repo.set_expiry(brought_forward.message_id,
                                 expires_at=now - timedelta(minutes=1), changed_at=now)
    await control.recall_message(
        event=MessageRecalled(tenant_id=recalled.tenant_id, message_id=recalled.message_id,
                              recalled_by="key:test"),
        messages=repo, claims=claims, blobs=blobs, audit=MongoAuditRepo(mongo_db), owner="t",
        lease_s=30)
    assert await _bucket(mongo_db, soon) == []
    assert await _bucket(mongo_db, far) == [postponed.message_id]
    assert await _bucket(mongo_db, now + timedelta(days=3)) == []
    assert await _bucket(mongo_db, now) == [brought_forward.message_id]

    # An hour and a bit later: only the one brought forward was due; the postponed one is not
    # purged at its old time (the bucket no longer names it).
    assert await _purge(repo, claims, blobs, now=now + timedelta(minutes=61),
                        max_minutes=120) == 1
    assert (await repo.get(brought_forward.message_id))["state"] == "purged"
    assert (await repo.get(postponed.message_id))["state"] == "stored"
    assert (await repo.get(recalled.message_id))["state"] == "recalled"
    # At its new time it is.
    assert await _purge(repo, claims, blobs, now=far + timedelta(minutes=1),
                        max_minutes=10 * 1440) == 1
    assert (await repo.get(postponed.message_id))["state"] == "purged"


async def test_a_stale_bucket_entry_is_checked_and_dropped(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    """An id filed under a minute it is no longer due in (a crash between writes, a
    redelivered record of a message whose expiry changed since) is read, checked, dropped."""
    repo, claims = MongoMessageRepo(mongo_db), MongoPurgeClaims(mongo_db)
    now = datetime.now(UTC)
    ev = await record_staged(blobs, settings, publisher, repo,
                             expires_at=now + timedelta(days=1))
    await mongo_db[mongo.EXPIRY_BUCKETS].update_one(
        {"_id": expiry.bucket_id(now)}, {"$addToSet": {"ids": ev.message_id}}, upsert=True)
    assert await _purge(repo, claims, blobs, now=now) == 0
    assert (await repo.get(ev.message_id))["state"] == "stored"
    assert await _bucket(mongo_db, now) == []
    assert await object_exists(blobs, ev.objects[0].key)


class CrashAfter:
    """The message repo of a store that dies after ``n`` messages were marked purged (before
    their ids leave the bucket)."""

    def __init__(self, repo: MongoMessageRepo, n: int) -> None:
        self._repo, self._left = repo, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    async def mark_purged(self, message_id: str, *, now: datetime) -> None:
        await self._repo.mark_purged(message_id, now=now)
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("store died")


async def test_a_store_dying_mid_purge_leaves_the_rest_for_the_next_run_exactly_once(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo, claims = MongoMessageRepo(mongo_db), MongoPurgeClaims(mongo_db)
    now = datetime.now(UTC)
    expired = [await record_staged(blobs, settings, publisher, repo,
                                   expires_at=now - timedelta(minutes=1)) for _ in range(4)]
    with pytest.raises(RuntimeError, match="store died"):
        await _purge(CrashAfter(repo, 2), claims, blobs, now=now, owner="dead")
    states = [(await repo.get(e.message_id))["state"] for e in expired]
    assert sorted(states) == ["purged", "purged", "stored", "stored"]
    # All four still filed: nothing left the bucket before the crash.
    assert await _bucket(mongo_db, now) == sorted(e.message_id for e in expired)

    # The dead replica's claim of its second message is still there until its lease runs out.
    later = now + timedelta(seconds=31)
    assert await _purge(repo, claims, blobs, now=later, owner="alive") == 2
    for e in expired:
        assert (await repo.get(e.message_id))["state"] == "purged"
        for obj in e.objects:
            assert not await object_exists(blobs, obj.key)
    assert await _bucket(mongo_db, now) == []
    assert await _purge(repo, claims, blobs, now=later, owner="alive") == 0
    assert await mongo_db[mongo.PURGE_CLAIMS].count_documents({}) == 0


async def test_closed_buckets_go_and_a_long_pause_is_caught_up_a_bounded_stretch_per_run(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo, claims = MongoMessageRepo(mongo_db), MongoPurgeClaims(mongo_db)
    now = datetime.now(UTC)
    ev = await record_staged(blobs, settings, publisher, repo,
                             expires_at=now + timedelta(minutes=70))
    # The first bucket created the purge's cursor at the current minute; a purge run now
    # leaves it there (its minute is not closed yet).
    start = expiry.minute_of(now)
    assert await repo.expiry_cursor(start=now - timedelta(days=1)) == start
    assert await _purge(repo, claims, blobs, now=now) == 0
    assert await repo.expiry_cursor(start=now) == start

    # The store was down: the next run comes 3 hours later and reads 60 minutes at most.
    back = now + timedelta(hours=3)
    assert await _purge(repo, claims, blobs, now=back, max_minutes=60) == 0
    assert await repo.expiry_cursor(start=now) == start + timedelta(minutes=60)
    assert (await repo.get(ev.message_id))["state"] == "stored"
    assert await _purge(repo, claims, blobs, now=back, max_minutes=60) == 1
    assert (await repo.get(ev.message_id))["state"] == "purged"
    # Its bucket was closed behind the cursor, which stops at the grace period.
    assert await _bucket(mongo_db, now + timedelta(minutes=70)) is None
    assert await _purge(repo, claims, blobs, now=back, max_minutes=60) == 0
    assert await repo.expiry_cursor(start=now) == expiry.minute_of(back - timedelta(seconds=120))


async def test_migrate_files_messages_recorded_before_the_buckets(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo, claims = MongoMessageRepo(mongo_db), MongoPurgeClaims(mongo_db)
    now = datetime.now(UTC)
    past = await record_staged(blobs, settings, publisher, repo,
                               expires_at=now - timedelta(days=2))
    future = await record_staged(blobs, settings, publisher, repo,
                                 expires_at=now + timedelta(days=1))
    never = await record_staged(blobs, settings, publisher, repo, expires_at=None)
    await mongo_db[mongo.EXPIRY_BUCKETS].delete_many({})  # as the previous release left it
    assert await _purge(repo, claims, blobs, now=now) == 0  # nothing filed: nothing found

    said: list[str] = []
    for _ in range(2):  # idempotent
        await migrate(settings, say=said.append)
    assert "expiry buckets ..." in said
    assert await _bucket(mongo_db, now) == [past.message_id]
    assert await _bucket(mongo_db, now + timedelta(days=1)) == [future.message_id]
    filed = [d["ids"] async for d in mongo_db[mongo.EXPIRY_BUCKETS].find(
        {"_id": {"$ne": expiry.CURSOR_ID}})]
    assert never.message_id not in [i for ids in filed for i in ids]
    assert await _purge(repo, claims, blobs) == 1
    assert (await repo.get(past.message_id))["state"] == "purged"
    assert (await repo.get(future.message_id))["state"] == "stored"
