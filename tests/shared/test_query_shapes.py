"""The hot-path reads are lookups by ``_id`` alone: FerretDB 1.24/SQLite answers anything
else (an extra field, ``$in``, a range) by decoding the whole collection (docs/cost.md).
A pymongo CommandListener records what the real repositories send to the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from secmsg.retrieve.adapters.mongo import MongoMessageRepo as RetrieveMessages
from secmsg.retrieve.adapters.mongo import MongoSessionRepo
from secmsg.retrieve.web.queries import WebQueries
from secmsg.shared import mongo
from secmsg.shared.documents import mailbox_key
from secmsg.shared.settings import CommonSettings
from secmsg.store.adapters.mongo import MongoAuditRepo
from secmsg.store.adapters.mongo import MongoMessageRepo as StoreMessages


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_record_open_and_session_check_read_by_id_alone(
        settings: CommonSettings, mongo_db: Any) -> None:
    rec = Recorder()
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, tz_aware=True,
                                                     event_listeners=[rec])
    db = client[settings.mongo_db]
    now = datetime.now(UTC)
    mid = "a" * 32
    doc = {"_id": mid, "tenant_id": "acme", "recipient_addresses": ["bob@example.org"],
           "state": "stored", "objects": [], "expires_at": None, "received_at": now}
    try:
        assert await StoreMessages(db).insert_many([doc]) == set()
        await MongoAuditRepo(db).insert_many([{"_id": f"{mid}:message.accepted"}])
        assert await StoreMessages(db).insert_many([doc]) == {0}  # a redelivery: no read
        await db["sessions"].insert_one({"_id": "h" * 64, "tenant_id": "acme",
                                         "address": "bob@example.org", "created_at": now,
                                         "last_seen_at": now,
                                         "expires_at": now + timedelta(hours=1)})
        rec.commands.clear()
        messages = RetrieveMessages(db)
        assert await messages.get_live(tenant_id="acme", message_id=mid,
                                       address="bob@example.org", now=now) is not None
        assert await messages.get_live(tenant_id="other", message_id=mid,
                                       address="bob@example.org", now=now) is None
        assert await messages.addressed(tenant_id="acme", message_id=mid,
                                        address="bob@example.org")
        assert await MongoSessionRepo(db).touch(token_hash="h" * 64, now=now,
                                                idle_s=600) is not None
    finally:
        await client.close()
    reads = [c for c in rec.commands if "find" in c or "update" in c]
    assert len(reads) == 5
    for c in reads:
        flt = c["filter"] if "find" in c else c["updates"][0]["q"]
        assert list(flt) == ["_id"] and isinstance(flt["_id"], str), c


def _message(mid: str, *, to: list[str], at: datetime, sender: str = "Doc@Acme.example",
             expires_at: datetime | None = None) -> dict[str, Any]:
    return {"_id": mid, "tenant_id": "acme", "sender": sender,
            "recipients": [{"address": a, "kind": "to"} for a in to],
            "recipient_addresses": to, "subject": f"s{mid[:4]}", "objects": [],
            "attachment_count": 0, "total_size": 10, "received_at": at,
            "expires_at": expires_at, "stored_at": at, "state": "stored"}


def _id_range_only(c: dict[str, Any]) -> bool:
    flt = c["filter"]
    return (list(flt) == ["_id"] and set(flt["_id"]) == {"$gt", "$lt"}
            and all(isinstance(v, str) for v in flt["_id"].values())
            and dict(c.get("sort", {})) == {"_id": -1})


async def test_listing_pages_are_id_ranges_of_the_mailbox(
        settings: CommonSettings, mongo_db: Any) -> None:
    """Inbox (API, web, toolbar list, sign-in's "anything for me?") and the sent list read one
    ``_id`` range of ``mailbox`` per page, nothing else in the filter; store writes the
    entries with the message, drops the recipients' ones on recall and purge, follows an
    expiry change."""
    rec = Recorder()
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, tz_aware=True,
                                                     event_listeners=[rec])
    db = client[settings.mongo_db]
    now = datetime.now(UTC)
    bob, carol = "bob@example.org", "carol@example.org"
    ids = [f"{n:032x}" for n in range(1, 8)]
    store = StoreMessages(db)
    try:
        docs = [_message(mid, to=[bob, carol] if n % 2 else [bob],
                         at=now - timedelta(minutes=10 - n)) for n, mid in enumerate(ids)]
        docs[0]["expires_at"] = now - timedelta(seconds=1)  # expired, not purged yet
        assert await store.insert_many(docs) == set()
        assert await store.insert_many(docs[:2]) == {0, 1}  # a redelivery: entries stay
        other = _message("f" * 32, to=["bob@example.org.evil"], at=now)  # a longer address
        await store.insert_many([other])
        rec.commands.clear()

        messages = RetrieveMessages(db)
        seen: list[str] = []
        after = None
        while True:
            page = await messages.list_live(tenant_id="acme", address=bob, now=now, limit=2,
                                            after=after)
            seen += [r.message_id for r in page]
            if len(page) < 2:
                break
            after = mailbox_key(page[-1].received_at, page[-1].message_id)
        assert seen == list(reversed(ids[1:]))  # newest first, the expired one left out
        assert await messages.has_live(tenant_id="acme", address=carol, now=now)
        assert not await messages.has_live(tenant_id="other", address=bob, now=now)
        sent = await WebQueries(db).sent("acme", "doc@acme.example", 3)
        assert [d["_id"] for d in sent] == [other["_id"], *reversed(ids[-2:])]
        finds = [c for c in rec.commands if "find" in c]
        assert finds and all(c["find"] == mongo.MAILBOX for c in finds), finds
        assert all(_id_range_only(c) for c in finds), finds

        # Recall and purge take the recipients' entries out; the sender's stay.
        await store.mark_recalled(ids[6], at=now, by="doc@acme.example")
        await store.mark_purged(ids[5], now=now)
        await store.set_expiry(ids[4], expires_at=now - timedelta(seconds=1), changed_at=now)
        left = await messages.list_live(tenant_id="acme", address=bob, now=now, limit=10,
                                        after=None)
        assert [r.message_id for r in left] == list(reversed(ids[1:4]))
        assert len(await WebQueries(db).sent("acme", "doc@acme.example", 10)) == 8
    finally:
        await client.close()


async def test_delivery_figures_are_one_aggregate_over_the_tenant_and_range(
        settings: CommonSettings, mongo_db: Any) -> None:
    """The admin delivery figures: one ``aggregate`` (``$match`` on the tenant and the time
    range, the fields of index ``tenant_updated``, then ``$group`` by state), not a count per
    state -- each of which was a pass over every tenant's rows."""
    from secmsg.ingest.adapters.mongo_reports import MongoReports

    rec = Recorder()
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, tz_aware=True,
                                                     event_listeners=[rec])
    db = client[settings.mongo_db]
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [("sent", 0), ("sent", 1), ("bounced", 2), ("deferred", 3), ("sent", 9)]
    try:
        await db[mongo.DELIVERY_STATUS].insert_many(
            [{"_id": f"m:{i}", "tenant_id": "acme", "message_id": "m", "recipient": f"{i}@x.org",
              "state": state, "updated_at": t0 + timedelta(minutes=at)}
             for i, (state, at) in enumerate(rows)]
            + [{"_id": "o:1", "tenant_id": "other", "message_id": "o", "recipient": "o@x.org",
                "state": "sent", "updated_at": t0}])
        rec.commands.clear()
        counts = await MongoReports(db).delivery_counts(
            "acme", since=t0, until=t0 + timedelta(minutes=5))
        assert counts == {"sent": 2, "deferred": 1, "bounced": 1, "failed": 0}
        sent = [c for c in rec.commands if c.get("aggregate") or c.get("count")]
        assert len(sent) == 1 and sent[0]["aggregate"] == mongo.DELIVERY_STATUS, sent
        match = sent[0]["pipeline"][0]["$match"]
        assert set(match) == {"tenant_id", "updated_at"}, match
    finally:
        await client.close()
