"""The hot-path reads are lookups by ``_id`` alone: FerretDB 1.24/SQLite answers anything
else (an extra field, ``$in``, a range) by decoding the whole collection (docs/cost.md).
A pymongo CommandListener records what the real repositories send to the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from secmsg.retrieve.adapters.mongo import MongoMessageRepo as RetrieveMessages
from secmsg.retrieve.adapters.mongo import MongoSessionRepo
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
