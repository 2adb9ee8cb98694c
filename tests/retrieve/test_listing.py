"""The inbox and sent lists page by ``mailbox`` ``_id`` ranges: ``after=`` in the API (the
earlier ``cursor=`` and its older base64 form still work), recall and expiry reach the lists,
and messages recorded before the listing index existed are listed after the migration."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from devstack.smtp_sink import Sink
from secmsg.ingest.adapters.mongo_reports import MongoReports
from secmsg.ops.migrate import migrate
from secmsg.shared import mongo
from secmsg.shared.documents import AuditDoc
from secmsg.shared.events import MessageOpened
from secmsg.shared.settings import CommonSettings
from secmsg.store import service as store_service
from secmsg.store.adapters.mongo import MongoAuditRepo
from secmsg.store.adapters.mongo import MongoMessageRepo as StoreMessages
from tests.retrieve.helpers import BOB, Running, Seeder, audit_events, bearer, sign_in
from tests.webmail.helpers import web_sign_in


async def _all_pages(app: Running, token: str, param: str, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": limit, **({param: cursor} if cursor else {})}
        r = await app.client.get("/v1/messages", params=params, headers=bearer(token))
        assert r.status_code == 200, r.text
        seen += [m["id"] for m in r.json()["messages"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return seen
    raise AssertionError("more pages than messages")


async def test_api_pages_with_after_and_still_takes_old_cursors(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    mine = [await seeder.message(subject=f"m{i}", received_at=base + timedelta(minutes=i))
            for i in range(5)]
    newest_first = [m.message_id for m in reversed(mine)]
    token = await sign_in(app.client, sink)
    assert await _all_pages(app, token, "after", 2) == newest_first
    assert await _all_pages(app, token, "cursor", 3) == newest_first

    # A cursor handed out before this release (base64 of "<received_at>|<id>").
    third = mine[2].doc
    old = base64.urlsafe_b64encode(
        f"{third['received_at'].isoformat()}|{third['_id']}".encode()).decode().rstrip("=")
    r = await app.client.get("/v1/messages", params={"cursor": old}, headers=bearer(token))
    assert [m["id"] for m in r.json()["messages"]] == newest_first[3:]

    for bad in ("g" * 48, "0" * 47, "garbage!"):
        r = await app.client.get("/v1/messages", params={"after": bad}, headers=bearer(token))
        assert r.status_code == 400 and r.json()["detail"] == "cursor is not valid", bad

    # Recall (store's write) takes it out of the list; the sender's sent entry stays.
    await StoreMessages(mongo_db).mark_recalled(mine[4].message_id, at=datetime.now(UTC),
                                                by="doctor@acme.example")
    assert await _all_pages(app, token, "after", 10) == newest_first[1:]
    assert await mongo_db[mongo.MAILBOX].count_documents({"box": "sent"}) == 5


async def test_messages_from_before_the_listing_index_are_listed_after_migrate(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any,
        settings: CommonSettings) -> None:
    old = [await seeder.message(subject=f"old{i}") for i in range(3)]
    gone = await seeder.message(subject="expired-and-purged", state="purged")
    token = await sign_in(app.client, sink)
    await mongo_db[mongo.MAILBOX].delete_many({})  # as recorded by the previous release
    r = await app.client.get("/v1/messages", headers=bearer(token))
    assert r.json()["messages"] == []

    said: list[str] = []
    for _ in range(2):  # idempotent
        await migrate(settings, say=said.append)
    assert "mailbox entries ..." in said
    r = await app.client.get("/v1/messages", headers=bearer(token))
    listed = {m["id"] for m in r.json()["messages"]}
    assert listed == {m.message_id for m in old} and gone.message_id not in listed
    assert await mongo_db[mongo.MAILBOX].count_documents({"address": BOB.lower()}) == 3


def _rows(html: str) -> dict[str, str]:
    """Subject -> the inbox row's class (read / unread)."""
    return {m[2]: m[1] for m in re.finditer(
        r'<tr class="(read|unread)">.*?<a href="/web/messages/[0-9a-f]+">([^<]*)</a>', html,
        re.S)}


async def test_the_inbox_shows_read_marks_from_its_mailbox_entries_alone(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any,
        settings: CommonSettings) -> None:
    """Opening a message (retrieve publishes ``message.opened``; store records it and sets the
    read mark on the reader's ``mailbox`` entry) shows it read in the inbox, whose page reads
    those entries and nothing else: with the audit trail gone, the marks are still there."""
    now = datetime.now(UTC)
    first = await seeder.message(subject="Biopsy results", received_at=now - timedelta(hours=2))
    await seeder.message(subject="Invoice March", received_at=now - timedelta(hours=1))
    await web_sign_in(app.client, sink, first.message_id)  # opens the first one
    assert _rows((await app.client.get("/web/inbox")).text) == {
        "Biopsy results": "unread", "Invoice March": "unread"}  # store has not run yet

    # Store's audit handler, on the event retrieve published, against the real database.
    events = [MessageOpened.model_validate({k: v for k, v in e.items() if k != "subject"})
              for e in await audit_events(settings) if e.get("kind") == "message.opened"]
    assert [e.message_id for e in events] == [first.message_id]
    received = first.doc["received_at"]  # as stored: to the millisecond
    assert events[0].received_at == received.replace(microsecond=received.microsecond // 1000
                                                     * 1000)
    for _ in range(2):  # a redelivery changes nothing
        await store_service.record_audits(events=events, audit=MongoAuditRepo(mongo_db),
                                          messages=StoreMessages(mongo_db))
    await mongo_db[mongo.AUDIT].delete_many({})
    assert _rows((await app.client.get("/web/inbox")).text) == {
        "Biopsy results": "read", "Invoice March": "unread"}


async def test_migrate_moves_audit_and_dead_letter_ids_and_fills_read_marks(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any,
        settings: CommonSettings) -> None:
    """Documents as the release before wrote them: audit ``_id``s message-first (no
    ``event_id``), an opened message without a read mark, dead letters ``SECMSG:<seq>`` and
    an ObjectId. After the migration (twice: idempotent) the export's ``_id`` range finds
    them, the inbox shows the read mark, the dead-letter list pages over all of them."""
    now = datetime.now(UTC).replace(microsecond=0)
    read = await seeder.message(subject="Seen before", received_at=now - timedelta(hours=2))
    await seeder.message(subject="Never opened", received_at=now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    await mongo_db[mongo.AUDIT].insert_many([
        {"_id": "e-old-open", "tenant_id": "acme", "message_id": read.message_id,
         "kind": "message.opened", "recipient": BOB.lower(), "actor": BOB.lower(), "at": at},
        {"_id": f"{read.message_id}:message.accepted", "tenant_id": "acme",
         "message_id": read.message_id, "kind": "message.accepted", "actor": "key:x",
         "at": at - timedelta(hours=2)}])
    await mongo_db[mongo.DEAD_LETTERS].insert_many([
        {"_id": "SECMSG:9", "service": "store", "stream_seq": 9, "state": "open"},
        {"_id": "SECMSG:10", "service": "store", "stream_seq": 10, "state": "open"},
        {"_id": ObjectId(), "service": "notify", "state": "open"}])

    said: list[str] = []
    for _ in range(2):
        await migrate(settings, say=said.append)
    assert "audit ids and read marks ..." in said and "dead-letter ids ..." in said

    trail = await mongo_db[mongo.AUDIT].find({}).sort("_id", 1).to_list(None)
    assert [(d["_id"], d["event_id"]) for d in trail] == [
        (AuditDoc.id_for("acme", at - timedelta(hours=2), f"{read.message_id}:message.accepted"),
         f"{read.message_id}:message.accepted"),
        (AuditDoc.id_for("acme", at, "e-old-open"), "e-old-open")]
    exported = [d.event_id async for d in MongoReports(mongo_db).audit(
        "acme", since=at - timedelta(minutes=1), until=None, message_id=None)]
    assert exported == ["e-old-open"]

    await web_sign_in(app.client, sink, read.message_id)
    assert _rows((await app.client.get("/web/inbox")).text) == {
        "Seen before": "read", "Never opened": "unread"}

    ids = [d["_id"] for d in await mongo_db[mongo.DEAD_LETTERS].find({}).to_list(None)]
    assert sorted(i for i in ids if i.startswith("SECMSG:")) == [f"SECMSG:{9:020d}",
                                                                  f"SECMSG:{10:020d}"]
    assert len(ids) == 3 and [i for i in ids if i.startswith("legacy:")]
