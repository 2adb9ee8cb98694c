"""key.rotation_requested: the re-wrap job moves every data key of the tenant to the new
generation, keeps its JetStream message alive, resumes after a crash and fails cleanly."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.asgi import AsgiFastStream
from faststream.nats import TestApp
from nats.aio.client import Client as NATS

from secmsg.shared import bus, mongo, subjects
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.crypto import KeyRing, decrypt_all
from secmsg.shared.errors import DependencyUnavailable, IntegrityError
from secmsg.shared.events import KeyRotationRequested, event_msg_id
from secmsg.shared.settings import CommonSettings
from secmsg.store import rewrap
from secmsg.store.adapters.mongo import (
    MongoAuditRepo,
    MongoMessageRepo,
    MongoPurgeClaims,
    MongoRotationRepo,
)
from secmsg.store.app import create_app
from tests.store.helpers import TENANT, drained, record_staged, wait_for


async def _recorded(n: int, settings: CommonSettings, blobs: S3BlobStore,
                    publisher: bus.EventPublisher, db: Any, tenant: str = TENANT) -> list[Any]:
    repo = MongoMessageRepo(db)
    return [await record_staged(blobs, settings, publisher, repo, tenant=tenant)
            for _ in range(n)]


async def _request(db: Any, generation: int = 1) -> KeyRotationRequested:
    """What ingest does: the request record first, then the event."""
    rid = uuid.uuid4().hex
    await db[mongo.KEY_ROTATIONS].insert_one({
        "_id": rid, "tenant_id": TENANT, "generation": generation, "state": "requested",
        "total": None, "done": 0, "started_at": datetime.now(UTC),
        "updated_at": datetime.now(UTC), "finished_at": None, "requested_by": "admin@acme"})
    return KeyRotationRequested(tenant_id=TENANT, message_id=rid, rotation_id=rid,
                                generation=generation, requested_by="admin@acme")


async def _assert_on_generation(db: Any, blobs: S3BlobStore, keyring: KeyRing,
                                events: list[Any], generation: int) -> None:
    """Every object's data key is on ``generation`` and still opens its ciphertext."""
    for ev in events:
        doc = await db[mongo.MESSAGES].find_one({"_id": ev.message_id})
        for obj in doc["objects"]:
            assert keyring.wrapped_generation(obj["wrapped_key"]) == generation
            dek = keyring.unwrap(ev.tenant_id, obj["object_id"], obj["wrapped_key"])
            plain = decrypt_all(dek, obj["object_id"], await blobs.get_bytes(obj["key"]),
                                obj["size"], obj["segment_size"])
            assert hashlib.sha256(plain).hexdigest() == obj["sha256"]


async def test_worker_rewraps_a_tenant_and_keeps_the_job_alive(
        store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, settings: CommonSettings,
        blobs: S3BlobStore, publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    # The job outlasts ack_wait several times over: only the in-progress beats keep
    # JetStream from handing it to the other replica (which pulls all the while).
    monkeypatch.setenv("SECMSG_STORE_ACK_WAIT_S", "1")
    monkeypatch.setenv("SECMSG_STORE_REWRAP_PAUSE_S", "0.4")
    monkeypatch.setenv("SECMSG_STORE_REWRAP_PROGRESS_EVERY", "2")
    monkeypatch.setenv("SECMSG_STORE_REWRAP_PAGE_SIZE", "3")
    events = await _recorded(6, settings, blobs, publisher, mongo_db)
    other = await _recorded(1, settings, blobs, publisher, mongo_db, tenant="other")
    req = await _request(mongo_db)
    progress: list[tuple[int, int]] = []

    async def finished() -> dict[str, Any] | None:
        doc = await mongo_db[mongo.KEY_ROTATIONS].find_one({"_id": req.rotation_id})
        if doc and doc.get("total") is not None:
            progress.append((doc["done"], doc["total"]))
        return doc if doc and doc["state"] == "done" else None

    replicas: list[AsgiFastStream] = [create_app(), create_app()]
    async with TestApp(replicas[0]), TestApp(replicas[1]):
        await publisher.publish(req, event_msg_id(req))
        doc = await wait_for(finished, timeout=30)
        # The same request again (a redelivery that escaped the duplicate window).
        await publisher.publish(req, f"{event_msg_id(req)}:again")
        await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))
        info = await nc.jetstream().consumer_info(subjects.STREAM, subjects.STORE_CONTROL)

    assert (doc["total"], doc["done"], doc["rewrapped"]) == (6, 6, 12)
    assert doc["finished_at"] is not None
    assert any(0 < d < 6 for d, _ in progress), progress  # saved on the way, not only at the end
    # Two copies published, two deliveries: the job was never handed out a second time.
    assert info.delivered.consumer_seq == 2
    await _assert_on_generation(mongo_db, blobs, settings.key_ring, events, 1)
    await _assert_on_generation(mongo_db, blobs, settings.key_ring, other, 0)
    rows = await mongo_db[mongo.AUDIT].find({"kind": "key.rotated"}).to_list(None)
    assert len(rows) == 1
    assert rows[0]["actor"] == "admin@acme" and rows[0]["message_id"] == ""
    assert rows[0]["detail"]["generation"] == "1"
    assert await mongo_db["purge_claims"].count_documents({}) == 0


class _CrashingRepo(MongoMessageRepo):
    """Dies (database gone) after ``left`` re-wrap writes."""

    def __init__(self, db: Any, left: int):
        super().__init__(db)
        self.left = left

    async def set_wrapped_keys(self, message_id: str, changes: Any) -> bool:
        if self.left == 0:
            raise DependencyUnavailable("database unavailable (test)")
        self.left -= 1
        return await super().set_wrapped_keys(message_id, changes)


async def test_restarted_job_resumes_and_counts_right(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    events = await _recorded(7, settings, blobs, publisher, mongo_db)
    req = await _request(mongo_db, generation=2)
    kw: dict[str, Any] = {"event": req, "claims": MongoPurgeClaims(mongo_db),
                          "rotations": MongoRotationRepo(mongo_db),
                          "audit": MongoAuditRepo(mongo_db), "keyring": settings.key_ring,
                          "owner": "t", "lease_s": 5, "page_size": 2, "progress_every": 2}
    with pytest.raises(DependencyUnavailable):
        await rewrap.rotate_keys(messages=_CrashingRepo(mongo_db, left=5), **kw)
    mid = await mongo_db[mongo.KEY_ROTATIONS].find_one({"_id": req.rotation_id})
    assert mid["state"] == "running" and mid["done"] == 4 and mid["total"] == 7
    assert await mongo_db["purge_claims"].count_documents({}) == 0  # released on the way out

    final = await rewrap.rotate_keys(messages=MongoMessageRepo(mongo_db), **kw)
    assert (final["state"], final["total"], final["done"]) == ("done", 7, 7)
    await _assert_on_generation(mongo_db, blobs, settings.key_ring, events, 2)
    # Once done, a redelivery changes nothing.
    again = await rewrap.rotate_keys(messages=MongoMessageRepo(mongo_db), **kw)
    assert (again["state"], again["done"]) == ("done", 7)
    assert await mongo_db[mongo.AUDIT].count_documents({"kind": "key.rotated"}) == 1


async def test_a_key_that_does_not_unwrap_fails_the_rotation(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    [ev] = await _recorded(1, settings, blobs, publisher, mongo_db)
    # A data key wrapped for another tenant: it will never unwrap as this tenant's.
    foreign = settings.key_ring.wrap("other", ev.objects[0].object_id, b"k" * 32)
    await mongo_db[mongo.MESSAGES].update_one(
        {"_id": ev.message_id}, {"$set": {"objects.0.wrapped_key": foreign}})
    req = await _request(mongo_db)
    await publisher.publish(req, event_msg_id(req))
    doc = await wait_for(lambda: mongo_db[mongo.KEY_ROTATIONS].find_one(
        {"_id": req.rotation_id, "state": "failed"}))
    await wait_for(lambda: drained(nc, subjects.STORE_CONTROL))
    assert doc["reason"] == "unwrap_failed" and doc["finished_at"] is not None
    dead = await mongo_db[mongo.DEAD_LETTERS].find({}).to_list(None)
    assert len(dead) == 1 and dead[0]["reason"] == "key rotation failed: a data key did not unwrap"
    assert await mongo_db[mongo.AUDIT].count_documents({"kind": "key.rotated"}) == 0


def test_pending_changes_skip_keys_already_on_the_generation() -> None:
    ring = KeyRing.parse(KeyRing.generate_spec(1))
    oid = uuid.uuid4().hex
    old = ring.wrap(TENANT, oid, b"d" * 32)
    new = ring.wrap(TENANT, oid, b"d" * 32, generation=3)
    doc = {"objects": [{"object_id": oid, "wrapped_key": old},
                       {"object_id": oid, "wrapped_key": new}]}
    changes = rewrap.pending_changes(doc, tenant_id=TENANT, keyring=ring, generation=3)
    assert list(changes) == [0] and changes[0][0] == old
    assert ring.unwrap(TENANT, oid, changes[0][1]) == b"d" * 32
    with pytest.raises(IntegrityError):
        rewrap.pending_changes(doc, tenant_id="other", keyring=ring, generation=3)
