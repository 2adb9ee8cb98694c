"""Revoked and recalled messages (``revocations`` written directly, as ingest does): 410 for
an addressed recipient, 404 for anyone else, gone from listings, and a download in progress
cut off after the revocation lands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from secmsg.retrieve import service, tokens
from secmsg.retrieve.access import RECHECK_BYTES, Gone
from secmsg.retrieve.ports import SessionRecord
from secmsg.shared import mongo
from tests.retrieve.helpers import ALICE, TENANT, Running, Seeder, bearer

CAROL = "carol@example.org"


async def token_for(app: Running, email: str) -> str:
    d = app.deps
    issued = await tokens.issue_token(tokens=d.tokens, accounts=d.accounts, audit=d.audit,
                                      tenant_id=TENANT, email=email, scopes=["read"],
                                      client="test", now=d.clock())
    return issued.token


async def revoke(db: Any, message_id: str, who: str, kind: str) -> None:
    await db[mongo.REVOCATIONS].insert_one({
        "_id": f"{message_id}:{who}", "tenant_id": TENANT, "message_id": message_id,
        "recipient": who, "kind": kind, "at": datetime.now(UTC), "by": "doctor@acme.example"})


async def test_revoked_is_410_for_that_recipient_only(app: Running, seeder: Seeder,
                                                      mongo_db: Any) -> None:
    msg = await seeder.message(to=["bob@example.org", ALICE],
                               attachments=[("a.txt", "text/plain", b"x" * 3000)])
    other = await seeder.message(to=[CAROL])  # carol can sign in; msg is not hers
    bob, alice, carol = [await token_for(app, a)
                         for a in ("bob@example.org", ALICE, CAROL)]
    att = next(iter(msg.attachments))
    await revoke(mongo_db, msg.message_id, "bob@example.org", "revoked")

    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(bob))
    assert r.status_code == 410 and r.json()["error"] == "revoked"
    r = await app.client.get(f"/v1/messages/{msg.message_id}/attachments/{att}",
                             headers=bearer(bob))
    assert r.status_code == 410 and r.json()["error"] == "revoked"
    listing = await app.client.get("/v1/messages", headers=bearer(bob))
    assert listing.json()["messages"] == []

    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(alice))
    assert r.status_code == 200  # revoked for bob, not for alice
    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(carol))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await app.client.get(f"/v1/messages/{other.message_id}", headers=bearer(carol))
    assert r.status_code == 200

    # Restoring access is deleting the entry: the next request reads again.
    await mongo_db[mongo.REVOCATIONS].delete_one({"_id": f"{msg.message_id}:bob@example.org"})
    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(bob))
    assert r.status_code == 200


async def test_recalled_is_410_for_every_recipient_and_404_for_others(
        app: Running, seeder: Seeder, mongo_db: Any) -> None:
    msg = await seeder.message(to=["bob@example.org", ALICE])
    await seeder.message(to=[CAROL])
    await revoke(mongo_db, msg.message_id, "*", "recalled")
    # store later marks it recalled and purges it: still 410, not 404, for recipients.
    await mongo_db[mongo.MESSAGES].update_one({"_id": msg.message_id},
                                             {"$set": {"state": "recalled"}})
    for who in ("bob@example.org", ALICE):
        r = await app.client.get(f"/v1/messages/{msg.message_id}",
                                 headers=bearer(await token_for(app, who)))
        assert r.status_code == 410 and r.json()["error"] == "recalled", who
    r = await app.client.get(f"/v1/messages/{msg.message_id}",
                             headers=bearer(await token_for(app, CAROL)))
    assert r.status_code == 404


async def test_download_in_progress_stops_after_revocation(app: Running, seeder: Seeder,
                                                           mongo_db: Any) -> None:
    size = RECHECK_BYTES + 1024 * 1024  # more than one re-check interval
    msg = await seeder.message(to=["bob@example.org"],
                               attachments=[("big.bin", "application/octet-stream",
                                             bytes(range(256)) * (size // 256))])
    att = next(iter(msg.attachments))
    d = app.deps
    who = SessionRecord(token_hash="t", tenant_id=TENANT, address="bob@example.org",
                        expires_at=None)
    plan = await service.plan_download(session=who, message_id=msg.message_id,
                                       object_id=att, range_header=None, if_range=None,
                                       messages=d.messages, audit=d.audit, client_ip=None,
                                       user_agent=None, now=d.clock())
    stream = service.stream_download(download=plan, blobs=d.blobs, keyring=d.keyring)
    received = len(await anext(stream))
    await revoke(mongo_db, msg.message_id, "bob@example.org", "revoked")
    with pytest.raises(Gone) as caught:
        async for chunk in stream:
            received += len(chunk)
    assert caught.value.code == "revoked"
    assert received <= RECHECK_BYTES < size  # the rest never left
