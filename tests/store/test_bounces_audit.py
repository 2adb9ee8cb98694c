"""notification.bounced (status, undeliverable) and the audit trail from every source."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream.asgi import AsgiFastStream
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from secmsg.shared import bus, mongo, subjects
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.documents import AuditDoc
from secmsg.shared.events import (
    AuditRecorded,
    MessageOpened,
    NotificationBounced,
    event_msg_id,
)
from secmsg.shared.settings import CommonSettings
from secmsg.store import service
from secmsg.store.adapters.mongo import (
    DELIVERY_STATUS,
    MongoDeliveryRepo,
    MongoUndeliverableRepo,
)
from tests.store.helpers import (
    TENANT,
    deferred,
    drained,
    publish_received,
    sent,
    stage_message,
    wait_for,
)


def _bounce(mid: str, rcpt: str, *, hard: bool) -> NotificationBounced:
    return NotificationBounced(tenant_id=TENANT, message_id=mid, recipient=rcpt,
                               status="5.1.1" if hard else "4.2.2", hard=hard,
                               reason="bounced_hard" if hard else "bounced_soft")


async def _status(db: Any, mid: str, rcpt: str) -> dict[str, Any]:
    return await db[DELIVERY_STATUS].find_one({"_id": f"{mid}:{rcpt}"})


async def test_bounces_override_sent_and_hard_ones_mark_the_address(mongo_db: Any) -> None:
    repo, undeliverable = MongoDeliveryRepo(mongo_db), MongoUndeliverableRepo(mongo_db)

    async def record(*events: Any) -> list[bool]:
        return await service.record_deliveries(events=events, deliveries=repo,
                                               undeliverable=undeliverable)

    m1, m2 = uuid.uuid4().hex, uuid.uuid4().hex
    await record(sent(m1, "Bob@Example.org"), sent(m1, "carol@example.org"),
                 sent(m1, "dan@example.org"))
    assert await record(_bounce(m1, "Bob@Example.org", hard=True),
                        _bounce(m1, "carol@example.org", hard=False)) == [True, True]
    # Redelivered sent, late deferral, repeated bounce: the bounce stands.
    await record(sent(m1, "bob@example.org"), deferred(m1, "carol@example.org", 3),
                 _bounce(m1, "bob@example.org", hard=True))
    bob = await _status(mongo_db, m1, "bob@example.org")
    assert (bob["state"], bob["bounce_status"], bob["hard"], bob["reason"]) == \
        ("bounced", "5.1.1", True, "bounced_hard")
    assert bob["attempt"] == 1  # the delivery that bounced
    carol = await _status(mongo_db, m1, "carol@example.org")
    assert (carol["state"], carol["hard"]) == ("bounced", False)
    assert (await _status(mongo_db, m1, "dan@example.org"))["state"] == "sent"

    # A hard bounce after a soft one for the same delivery wins; the reverse order too.
    await record(_bounce(m1, "carol@example.org", hard=True))
    await record(_bounce(m1, "dan@example.org", hard=True),
                 _bounce(m1, "dan@example.org", hard=False))
    for rcpt in ("carol@example.org", "dan@example.org"):
        assert (await _status(mongo_db, m1, rcpt))["bounce_status"] == "5.1.1", rcpt

    # Bounce handled before its sent (notify republished sent after a crash): still bounced.
    await record(_bounce(m2, "erin@example.org", hard=False))
    await record(sent(m2, "erin@example.org"))
    assert (await _status(mongo_db, m2, "erin@example.org"))["state"] == "bounced"
    # The single-event path agrees.
    assert await service.record_delivery(event=sent(m2, "erin@example.org"),
                                         deliveries=repo) is False
    assert (await _status(mongo_db, m2, "erin@example.org"))["state"] == "bounced"

    # Undeliverable: hard bounces only, first report per tenant and address wins.
    await record(_bounce(m2, "BOB@example.org", hard=True))
    rows = await mongo_db[mongo.UNDELIVERABLE].find({}).to_list(None)
    assert {r["_id"] for r in rows} == {f"{TENANT}:bob@example.org",
                                        f"{TENANT}:carol@example.org",
                                        f"{TENANT}:dan@example.org"}
    bob_row = next(r for r in rows if r["address"] == "bob@example.org")
    assert (bob_row["message_id"], bob_row["status"], bob_row["tenant_id"]) == \
        (m1, "5.1.1", TENANT)


async def test_delivery_and_bounce_events_through_the_worker_audit_once(
        store_app: AsgiFastStream, publisher: bus.EventPublisher, nc: NATS,
        mongo_db: Any) -> None:
    mid = uuid.uuid4().hex

    def count(state: str) -> float:
        return REGISTRY.get_sample_value("secmsg_store_deliveries_total",
                                         {"tenant": TENANT, "state": state}) or 0.0

    before = {s: count(s) for s in ("sent", "bounced")}
    events: list[Any] = [deferred(mid, "bob@example.org", 1), sent(mid, "bob@example.org", 2),
                         sent(mid, "carol@example.org"),
                         _bounce(mid, "bob@example.org", hard=True)]
    for copy in ("a", "b"):  # every event twice, as a redelivery would bring it
        for ev in events:
            await publisher.publish(ev, f"{event_msg_id(ev, ev.recipient)}:{copy}")
    await wait_for(lambda: drained(nc, subjects.STORE_DELIVERY))

    assert (await _status(mongo_db, mid, "bob@example.org"))["state"] == "bounced"
    assert (await _status(mongo_db, mid, "carol@example.org"))["state"] == "sent"
    assert await mongo_db[mongo.UNDELIVERABLE].count_documents({}) == 1
    rows = await mongo_db[mongo.AUDIT].find({"message_id": mid}).to_list(None)
    assert sorted((r["kind"], r["recipient"]) for r in rows) == [
        ("notification.bounced", "bob@example.org"),
        ("notification.deferred", "bob@example.org"),
        ("notification.sent", "bob@example.org"),
        ("notification.sent", "carol@example.org")]
    bounced = next(r for r in rows if r["kind"] == "notification.bounced")
    assert bounced["detail"] == {"status": "5.1.1", "hard": "true", "reason": "bounced_hard"}
    assert bounced["actor"] == "system" and bounced["tenant_id"] == TENANT
    assert count("sent") - before["sent"] == 2
    assert count("bounced") - before["bounced"] == 1
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0


async def test_accepted_and_recorded_actions_are_audited_once(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    ev = await stage_message(blobs, settings)
    await publish_received(publisher, ev)
    await publish_received(publisher, ev, attempt=":again")
    action = AuditRecorded(tenant_id=TENANT, message_id="", event_id=uuid.uuid4().hex,
                           action="token.issued", actor="Bob@Example.org",
                           subject_address="Bob@Example.org", detail={"client": "toolbar"},
                           client_ip="203.0.113.7", user_agent="pytest")
    for copy in ("a", "b"):
        await publisher.publish(action, f"{action.event_id}:{copy}")
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))
    await wait_for(lambda: drained(nc, subjects.STORE_AUDIT))

    accepted = await mongo_db[mongo.AUDIT].find({"kind": "message.accepted"}).to_list(None)
    assert len(accepted) == 1
    assert (accepted[0]["actor"], accepted[0]["message_id"]) == ("key:test", ev.message_id)
    assert accepted[0]["detail"] == {"recipients": "2", "objects": "2"}
    recorded = await mongo_db[mongo.AUDIT].find({"kind": "token.issued"}).to_list(None)
    assert len(recorded) == 1
    r = recorded[0]
    assert (r["event_id"], r["actor"], r["subject_address"], r["message_id"]) == \
        (action.event_id, "Bob@Example.org", "bob@example.org", "")
    assert r["_id"] == AuditDoc.id_for(TENANT, action.occurred_at, action.event_id)
    assert (r["detail"], r["client_ip"], r["user_agent"]) == \
        ({"client": "toolbar"}, "203.0.113.7", "pytest")
    # No content in the trail: the subject line is nowhere in it.
    assert await mongo_db[mongo.AUDIT].count_documents({"detail.subject": {"$exists": True}}) \
        == 0


async def test_an_opened_message_is_marked_read_on_the_recipients_mailbox_entry(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    """The inbox's read mark rides the ``mailbox`` entry (an inbox page reads nothing else):
    the first open sets it, a redelivery or a later open keeps the first time, an event
    without ``received_at`` (an older retrieve) is marked too, the other recipient's entry
    stays unread."""
    ev = await stage_message(blobs, settings, recipients=("Bob@Example.org", "carol@example.org",
                                                          "dan@example.org"))
    await publish_received(publisher, ev)
    await wait_for(lambda: drained(nc, subjects.STORE_RECEIVED))
    stored = await mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id})
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def opened(who: str, minutes: int, *, with_time: bool = True) -> MessageOpened:
        return MessageOpened(tenant_id=TENANT, message_id=ev.message_id,
                             event_id=uuid.uuid4().hex, recipient=who,
                             occurred_at=t0 + timedelta(minutes=minutes),
                             received_at=stored["received_at"] if with_time else None)

    first = opened("BOB@example.org", 5)
    for e, copy in ((opened("bob@example.org", 9), "a"), (first, "a"), (first, "b"),
                    (opened("dan@example.org", 7, with_time=False), "a")):
        await publisher.publish(e, f"{e.event_id}:{copy}")
    await wait_for(lambda: drained(nc, subjects.STORE_AUDIT))

    def entry(who: str) -> Awaitable[dict[str, Any] | None]:
        return mongo_db[mongo.MAILBOX].find_one({"box": "in", "address": who,
                                                  "message_id": ev.message_id})

    bob = await entry("bob@example.org")
    assert bob is not None and bob["opened"] is True
    assert bob["opened_at"] == t0 + timedelta(minutes=5)
    dan = await entry("dan@example.org")
    assert dan is not None and (dan["opened"], dan["opened_at"]) == (
        True, t0 + timedelta(minutes=7))
    carol = await entry("carol@example.org")
    assert carol is not None and "opened" not in carol
    assert await mongo_db[mongo.AUDIT].count_documents({"kind": "message.opened"}) == 3
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 0
