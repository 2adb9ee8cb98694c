"""Bcc recipients are notified but never named in a header; an address on the tenant's
``undeliverable`` list is failed with reason ``undeliverable`` and not sent to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from devstack.smtp_sink import Sink
from secmsg.notify.adapters.mongo import MongoUndeliverableList
from secmsg.shared import mongo
from secmsg.shared.events import MessageStored, Recipient
from tests.notify.conftest import Bus, eventually, stored_event


def _with_bcc(base: MessageStored, bcc: list[str]) -> MessageStored:
    return base.model_copy(update={"recipients": [
        *base.recipients, *(Recipient(address=a, kind="bcc") for a in bcc)]})


async def test_bcc_hidden_and_undeliverable_skipped(
        tenant: str, mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    await mongo_db[mongo.UNDELIVERABLE].insert_many([
        {"_id": f"{tenant}:erin@example.org", "tenant_id": tenant,
         "address": "erin@example.org", "status": "5.1.1", "message_id": uuid.uuid4().hex,
         "at": datetime.now(UTC)},
        # Another tenant's entry does not block this tenant's recipient.
        {"_id": "other:dave@example.org", "tenant_id": "other", "address": "dave@example.org",
         "status": "5.1.1", "message_id": uuid.uuid4().hex, "at": datetime.now(UTC)}])
    await start_notify()
    ev = _with_bcc(stored_event(to=["bob@example.org"], cc=["carol@example.org"]),
                   ["dave@example.org", "Erin@Example.org"])
    only_bcc = _with_bcc(stored_event(to=[]), ["frank@example.org"])
    await nbus.publish(ev)
    await nbus.publish(only_bcc)

    [failed] = await eventually(lambda: nbus.events("notification.failed"), what="failed")
    assert (failed.recipient, failed.reason) == ("Erin@Example.org", "undeliverable")
    for who in ("bob@example.org", "carol@example.org", "dave@example.org",
                "frank@example.org"):
        await eventually(lambda w=who: sink.handler.for_recipient(w), what=who)
    assert sink.handler.for_recipient("Erin@Example.org") == []
    assert len(sink.messages) == 4
    for m in sink.messages:
        head = m.data.split(b"\r\n\r\n")[0].lower()
        assert b"dave@" not in head and b"erin@" not in head and b"frank@" not in head
        # no Bcc header line (the word alone can occur in a hex Message-ID or boundary)
        assert b"\r\nbcc:" not in b"\r\n" + head
    [dave] = sink.handler.for_recipient("dave@example.org")
    assert dave.message["To"] == "bob@example.org" and dave.message["Cc"] == "carol@example.org"
    [frank] = sink.handler.for_recipient("frank@example.org")
    assert frank.message["To"] == "undisclosed-recipients:;" and frank.message["Cc"] is None
    sent = await nbus.events("notification.sent")
    assert sorted(e.recipient for e in sent) == [
        "bob@example.org", "carol@example.org", "dave@example.org", "frank@example.org"]


async def test_undeliverable_lookup_is_per_tenant_and_case_blind(mongo_db: Any) -> None:
    await mongo_db[mongo.UNDELIVERABLE].insert_one({"_id": "t1:x@example.org",
                                                    "tenant_id": "t1"})
    now = [0.0]
    lst = MongoUndeliverableList(mongo_db, ttl_s=30, clock=lambda: now[0])
    assert await lst.blocked("t1", ["X@Example.org", "y@example.org"]) == {"x@example.org"}
    assert await lst.blocked("t2", ["x@example.org"]) == set()
    assert await lst.blocked("t1", []) == set()
    # the tenant's list is cached for ttl_s, then read again
    await mongo_db[mongo.UNDELIVERABLE].insert_one({"_id": "t1:y@example.org",
                                                    "tenant_id": "t1"})
    assert await lst.blocked("t1", ["y@example.org"]) == set()
    now[0] = 31.0
    assert await lst.blocked("t1", ["y@example.org"]) == {"y@example.org"}
