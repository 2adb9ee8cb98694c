"""The typed read views (``secmsg.shared.documents``) against what their owners write.

A field the owner renames or drops fails here, not in a reader at run time: each owner's own
document builder is run and its output read back through the view, field by field. The
indexes a view declares are the ones the owner creates (against the real FerretDB).
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from secmsg.shared import documents, mongo
from secmsg.shared.documents import (
    AuditDoc,
    DeliveryStatusDoc,
    Document,
    MessageDoc,
    ReadView,
    UndeliverableDoc,
)
from secmsg.shared.events import (
    MessageOpened,
    MessageReceived,
    NotificationBounced,
    NotificationDeferred,
    Recipient,
    StoredObject,
)
from secmsg.store import audit as store_audit
from secmsg.store import service as store_service
from secmsg.store.adapters import mongo as store_mongo

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _received() -> MessageReceived:
    obj = StoredObject(object_id="o1", key="staging/t1/m1/o1", role="attachment",
                       filename="a.pdf", content_type="application/pdf", size=10, sha256="ab",
                       wrapped_key="wk", segment_size=65536)
    return MessageReceived(tenant_id="t1", message_id="m1", sender="Ann@Example.org",
                           recipients=[Recipient(address="Bob@Example.net", kind="to"),
                                       Recipient(address="c@example.net", kind="bcc")],
                           subject="Hello", objects=[obj], expires_at=AT + timedelta(days=3),
                           disclaimer="d", submitted_by="key:k1", occurred_at=AT)


def _same(view: BaseModel, written: dict[str, Any], *, fields: set[str]) -> None:
    """Every view field the owner writes reads back equal (``_id`` as ``id``)."""
    dumped = view.model_dump(mode="json")
    raw = {("id" if k == "_id" else k): v for k, v in written.items()}
    for name in fields:
        got = dumped[name]
        want = raw[name]
        if isinstance(want, datetime):
            assert got == want.isoformat().replace("+00:00", "Z"), name
        elif isinstance(want, list | tuple):
            assert [dict(x) if isinstance(x, dict) else x for x in got] == list(want), name
        else:
            assert got == want, name


def _declared(model: type[Document]) -> set[str]:
    return set(model.model_fields)


def test_message_document_reads_back_through_the_view() -> None:
    written = store_service.message_document(_received(), stored_at=AT)
    view = MessageDoc.model_validate(written)
    fields = _declared(MessageDoc) - {"recalled_at"}  # set later, by a recall
    assert fields <= {("id" if k == "_id" else k) for k in written}, \
        "the view declares a field store no longer writes"
    _same(view, written, fields=fields)
    assert view.recipient_addresses == ("bob@example.net", "c@example.net")
    assert view.objects[0].role == "attachment"


def test_a_projected_read_gets_the_defaults() -> None:
    view = MessageDoc.model_validate({"_id": "m1", "state": "purged"})
    assert (view.id, view.state, view.recipients, view.expires_at) == ("m1", "purged", (), None)


def test_naive_datetimes_read_as_utc() -> None:
    view = MessageDoc.model_validate({"_id": "m1", "received_at": datetime(2026, 1, 1)})
    assert view.received_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_audit_documents_read_back_through_the_view() -> None:
    opened = MessageOpened(tenant_id="t1", message_id="m1", event_id="e1",
                           recipient="Bob@Example.net", client_ip="192.0.2.1",
                           user_agent="ua", occurred_at=AT)
    written = store_audit.content_access(opened)
    view = AuditDoc.model_validate(written)
    fields = _declared(AuditDoc) - {"object_id", "range_start", "range_end"}  # downloads'
    assert fields <= {("id" if k == "_id" else k) for k in written}
    _same(view, written, fields=fields)


def test_delivery_status_and_undeliverable_read_back_through_their_views() -> None:
    deferred = NotificationDeferred(tenant_id="t1", message_id="m1", recipient="Bob@x.net",
                                    attempt=2, reason="timeout", retry_at=AT, occurred_at=AT)
    update = store_service.delivery_update(deferred, now=AT)
    written = {"_id": update.delivery_id, **update.fields}
    view = DeliveryStatusDoc.model_validate(written)
    _same(view, written, fields=set(written) - {"_id"})
    bounced = NotificationBounced(tenant_id="t1", message_id="m1", recipient="Bob@x.net",
                                  status="5.1.1", hard=True, reason="mailbox_unknown",
                                  occurred_at=AT)
    bounce = store_service.bounce_update(bounced, now=AT)
    written = {"_id": bounce.delivery_id, **bounce.fields}
    _same(DeliveryStatusDoc.model_validate(written), written, fields=set(written) - {"_id"})
    written = store_service.undeliverable_doc(bounced)
    view = UndeliverableDoc.model_validate(written)
    assert view.id == UndeliverableDoc.id_for("t1", "Bob@x.net")
    _same(view, written, fields=_declared(UndeliverableDoc))


def test_the_views_are_read_only() -> None:
    public = {n for n, _ in inspect.getmembers(ReadView, inspect.isfunction)
              if not n.startswith("_")}
    # count_by is an aggregate of a fixed $match + $group: it reads, it never writes ($out)
    assert public == {"get", "find_one", "find", "iterate", "count", "count_by"}


def test_every_view_names_a_known_collection_and_owner() -> None:
    for view in documents.VIEWS:
        assert view.COLLECTION in mongo.COLLECTIONS
        assert view.OWNER in ("ingest", "store", "notify", "retrieve")


async def test_the_owner_creates_the_indexes_the_views_rely_on(mongo_db: Any) -> None:
    await store_mongo.ensure_indexes(mongo_db)
    for view in documents.VIEWS:
        if view.OWNER != "store" or not view.INDEXES:
            continue
        have = {ix["name"]: tuple((k, int(v)) for k, v in ix["key"].items())
                async for ix in await mongo_db[view.COLLECTION].list_indexes()}
        for index in view.INDEXES:
            assert have.get(index.name) == index.keys, (view.COLLECTION, index.name)


async def test_a_view_reads_what_the_owner_stored(mongo_db: Any) -> None:
    repo = store_mongo.MongoMessageRepo(mongo_db)
    written = store_service.message_document(_received(), stored_at=AT)
    assert await repo.insert(written)
    view = ReadView(mongo_db, MessageDoc)
    got = await view.get("m1")
    assert got is not None and got.received_at == AT and got.recipients[1].kind == "bcc"
    partial = await view.find_one({"tenant_id": "t1"}, ["state"])
    assert partial is not None and partial.state == "stored" and partial.subject == ""
    assert await view.count({"tenant_id": "t1", "recipient_addresses": "bob@example.net"}) == 1
    assert [d.id for d in await view.find({"tenant_id": "t1"}, sort=[("_id", 1)])] == ["m1"]
