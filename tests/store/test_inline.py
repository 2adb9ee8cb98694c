"""Inline objects (ciphertext inside the message document): recorded without asking S3,
checked for length, and gone from the document when the message is purged or recalled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from secmsg.shared import bus, mongo
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.errors import IntegrityError
from secmsg.shared.events import MessageRecalled
from secmsg.shared.settings import CommonSettings
from secmsg.store import control, service
from secmsg.store.adapters.mongo import MongoAuditRepo, MongoMessageRepo, MongoPurgeClaims
from tests.store.helpers import stage_message


async def test_inline_objects_are_recorded_and_purged_with_the_document(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    now = datetime.now(UTC)
    ev = await stage_message(blobs, settings, inline=True, expires_at=now - timedelta(seconds=1))
    assert await service.record_message(event=ev, messages=repo, blobs=blobs,
                                        publisher=publisher)
    doc = await repo.get(ev.message_id)
    assert doc is not None
    assert doc["inline"] == {o.object_id: o.inline for o in ev.objects}
    assert all("inline" not in o for o in doc["objects"])
    assert await blobs.list_keys(f"t/acme/m/{ev.message_id}/") == []

    assert await service.purge_expired(messages=repo, claims=MongoPurgeClaims(mongo_db),
                                       blobs=blobs, owner="r", lease_s=30, limit=10) == 1
    doc = await repo.get(ev.message_id)
    assert doc is not None and doc["state"] == "purged" and "inline" not in doc


async def test_recall_removes_inline_ciphertext(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    ev = await stage_message(blobs, settings, inline=True)
    await service.record_message(event=ev, messages=repo, blobs=blobs, publisher=publisher)
    recall = MessageRecalled(tenant_id=ev.tenant_id, message_id=ev.message_id,
                             recalled_by="key:test")
    assert await control.recall_message(event=recall, messages=repo,
                                        claims=MongoPurgeClaims(mongo_db), blobs=blobs,
                                        audit=MongoAuditRepo(mongo_db), owner="r",
                                        lease_s=30) == "recalled"
    doc = await mongo_db[mongo.MESSAGES].find_one({"_id": ev.message_id})
    assert doc["state"] == "recalled" and "inline" not in doc


async def test_inline_ciphertext_of_the_wrong_length_is_refused(
        settings: CommonSettings, blobs: S3BlobStore, publisher: bus.EventPublisher,
        mongo_db: Any) -> None:
    repo = MongoMessageRepo(mongo_db)
    ev = await stage_message(blobs, settings, inline=True, truncate=5)
    with pytest.raises(IntegrityError):
        await service.record_message(event=ev, messages=repo, blobs=blobs, publisher=publisher)
    assert await repo.get(ev.message_id) is None
