"""Expiry, revocation, recall and the delivery slip of a sent message: who may (admin, the
submitting key, the sending token), 404 for everything else, idempotency, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.shared import mongo
from tests.ingest.access_helpers import add_message, add_user, audits, auth, make_token, published
from tests.ingest.conftest import TENANT, Ingest


@pytest.fixture
async def keys(ingest: Ingest) -> dict[str, str]:
    sender_key = ingest.api_key
    key_id = sender_key.split("_")[1]
    return {"sender": sender_key, "sender_id": key_id,
            "other": await create_api_key(ingest.db, tenant_id=TENANT, label="other"),
            "admin": await create_api_key(ingest.db, tenant_id=TENANT, label="a",
                                          scopes=("admin",))}


async def test_expiry_change_publishes_and_authorises(ingest: Ingest,
                                                      keys: dict[str, str]) -> None:
    mid = await add_message(ingest.db, tenant=TENANT, sender="alice@acme.example",
                            to=["bob@example.org"], submitted_by=f"api_key:{keys['sender_id']}")
    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    body = {"expires_at": at.isoformat()}
    # Another sending key of the same tenant: not its message -> 404.
    r = await ingest.client.patch(f"/v1/messages/{mid}", json=body, headers=auth(keys["other"]))
    assert r.status_code == 404
    r = await ingest.client.patch(f"/v1/messages/{mid}", json=body, headers=auth(keys["sender"]))
    assert r.status_code == 202, r.text
    assert datetime.fromisoformat(r.json()["expires_at"]) == at
    r = await ingest.client.patch(f"/v1/messages/{mid}", json={"expires_at": None},
                                  headers=auth(keys["admin"]))
    assert r.status_code == 202 and r.json()["expires_at"] is None
    changes = [e for e in await published(ingest.settings)
               if e.kind == "message.expiry_changed"]
    assert [(c.expires_at, c.changed_by) for c in changes] == [
        (at, f"key:{keys['sender_id']}"), (None, "key:" + keys["admin"].split("_")[1])]
    assert len(await audits(ingest.settings, "message.expiry_changed")) == 2

    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = await ingest.client.patch(f"/v1/messages/{mid}", json={"expires_at": past},
                                  headers=auth(keys["sender"]))
    assert r.status_code == 400
    r = await ingest.client.patch(f"/v1/messages/{mid}", json={"expires_at": "soon"},
                                  headers=auth(keys["sender"]))
    assert r.status_code == 422


async def test_cross_tenant_and_unknown_are_404(ingest: Ingest, keys: dict[str, str]) -> None:
    await create_tenant(ingest.db, tenant_id="other", name="Other")
    foreign = await add_message(ingest.db, tenant="other", sender="x@other.example",
                                to=["bob@example.org"])
    for mid in (foreign, "0" * 32, "not-an-id"):
        r = await ingest.client.post(f"/v1/messages/{mid}/recall", headers=auth(keys["admin"]))
        assert r.status_code == 404, r.text
        r = await ingest.client.get(f"/v1/messages/{mid}/slip", headers=auth(keys["admin"]))
        assert r.status_code == 404
    assert await ingest.db[mongo.REVOCATIONS].count_documents({}) == 0
    reader, _ = await make_token(ingest.db, tenant=TENANT, email="bob@example.org",
                                 scopes=["read"])
    r = await ingest.client.post(f"/v1/messages/{foreign}/recall", headers=auth(reader))
    assert r.status_code == 403


async def test_revoke_restore_recall(ingest: Ingest) -> None:
    await add_user(ingest.db, tenant=TENANT, email="alice@acme.example", role="sender")
    token, _ = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                scopes=["send"], client="webmail")
    mid = await add_message(ingest.db, tenant=TENANT, sender="Alice@acme.example",
                            to=["Bob@example.org", "carol@example.org"])
    col = ingest.db[mongo.REVOCATIONS]

    r = await ingest.client.post(f"/v1/messages/{mid}/revoke",
                                 json={"recipients": ["bob@example.org"]}, headers=auth(token))
    assert r.status_code == 200 and r.json()["revoked"] == ["bob@example.org"]
    r = await ingest.client.post(f"/v1/messages/{mid}/revoke",
                                 json={"recipients": ["BOB@example.org"]}, headers=auth(token))
    assert r.status_code == 200
    doc = await col.find_one({"_id": f"{mid}:bob@example.org"})
    assert doc["kind"] == "revoked" and doc["by"] == "alice@acme.example"
    assert await col.count_documents({}) == 1
    r = await ingest.client.post(f"/v1/messages/{mid}/revoke",
                                 json={"recipients": ["eve@example.org"]}, headers=auth(token))
    assert r.status_code == 400

    r = await ingest.client.delete(f"/v1/messages/{mid}/revocations/bob@example.org",
                                   headers=auth(token))
    assert r.status_code == 204 and await col.count_documents({}) == 0
    r = await ingest.client.post(f"/v1/messages/{mid}/revoke", headers=auth(token))
    assert sorted(r.json()["revoked"]) == ["bob@example.org", "carol@example.org"]
    revoked = await audits(ingest.settings, "message.revoked")
    assert [e.subject_address for e in revoked] == [
        "bob@example.org", "bob@example.org", "carol@example.org"]
    restored = await audits(ingest.settings, "message.restored")
    assert [e.subject_address for e in restored] == ["bob@example.org"]

    for _ in range(2):
        r = await ingest.client.post(f"/v1/messages/{mid}/recall", headers=auth(token))
        assert r.status_code == 202, r.text
    assert r.json()["first_time"] is False
    star = await col.find_one({"_id": f"{mid}:*"})
    assert star["kind"] == "recalled" and star["recipient"] == "*"
    recalls = [e for e in await published(ingest.settings) if e.kind == "message.recalled"]
    assert len(recalls) == 1 and recalls[0].recalled_by == "alice@acme.example"
    assert len(await audits(ingest.settings, "message.recalled")) == 1
    r = await ingest.client.delete(f"/v1/messages/{mid}/revocations/*", headers=auth(token))
    assert r.status_code == 409
    r = await ingest.client.patch(f"/v1/messages/{mid}", json={"expires_at": None},
                                  headers=auth(token))
    assert r.status_code == 409

    # Another user's token cannot touch it.
    other, _ = await make_token(ingest.db, tenant=TENANT, email="dave@acme.example",
                                scopes=["send"])
    r = await ingest.client.post(f"/v1/messages/{mid}/revoke", headers=auth(other))
    assert r.status_code == 404


async def test_slip(ingest: Ingest, keys: dict[str, str]) -> None:
    mid = await add_message(ingest.db, tenant=TENANT, sender="alice@acme.example",
                            to=["bob@example.org", "carol@example.org"], bcc=["dan@example.org"],
                            submitted_by=f"api_key:{keys['sender_id']}")
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    await ingest.db[mongo.DELIVERY_STATUS].insert_many([
        {"_id": f"{mid}:bob@example.org", "tenant_id": TENANT, "message_id": mid,
         "recipient": "bob@example.org", "state": "sent", "attempt": 1, "reason": None,
         "updated_at": t0, "occurred_at": t0},
        {"_id": f"{mid}:carol@example.org", "tenant_id": TENANT, "message_id": mid,
         "recipient": "carol@example.org", "state": "failed", "attempt": 3,
         "reason": "permanent_rejection", "updated_at": t0, "occurred_at": t0}])
    await ingest.db[mongo.AUDIT].insert_many([
        {"_id": "e1", "tenant_id": TENANT, "message_id": mid, "kind": "message.opened",
         "recipient": "bob@example.org", "at": t0 + timedelta(minutes=5)},
        {"_id": "e2", "tenant_id": TENANT, "message_id": mid, "kind": "message.opened",
         "recipient": "bob@example.org", "at": t0 + timedelta(minutes=9)},
        {"_id": "e3", "tenant_id": TENANT, "message_id": mid, "kind": "attachment.downloaded",
         "recipient": "bob@example.org", "object_id": "ab" * 16,
         "at": t0 + timedelta(minutes=6)}])
    r = await ingest.client.get(f"/v1/messages/{mid}/slip", headers=auth(keys["sender"]))
    assert r.status_code == 200, r.text
    lines = {x["address"]: x for x in r.json()["recipients"]}
    bob, carol, dan = lines["bob@example.org"], lines["carol@example.org"], lines["dan@example.org"]
    assert bob["notification_state"] == "sent"
    assert datetime.fromisoformat(bob["first_opened_at"]) == t0 + timedelta(minutes=5)
    assert bob["downloads"] == [{"object_id": "ab" * 16,
                                 "at": (t0 + timedelta(minutes=6)).isoformat().replace(
                                     "+00:00", "Z")}]
    assert carol["notification_reason"] == "permanent_rejection"
    assert carol["first_opened_at"] is None and carol["downloads"] == []
    assert dan["kind"] == "bcc" and dan["notification_state"] is None
    r = await ingest.client.get(f"/v1/messages/{mid}/slip", headers=auth(keys["other"]))
    assert r.status_code == 404


@pytest.mark.parametrize("state", ["stored", "purged"])
async def test_an_expired_message_cannot_be_revived(ingest: Ingest, keys: dict[str, str],
                                                    state: str) -> None:
    """Once ``expires_at`` has passed the message is gone for its readers, even while the purge
    has not run yet (``stored``) or after it (``purged``): a PATCH must not bring it back."""
    mid = await add_message(ingest.db, tenant=TENANT, sender="alice@acme.example",
                            to=["bob@example.org"], submitted_by=f"api_key:{keys['sender_id']}")
    expired = datetime.now(UTC) - timedelta(minutes=1)
    await ingest.db[mongo.MESSAGES].update_one({"_id": mid},
                                               {"$set": {"expires_at": expired, "state": state}})
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    for body in ({"expires_at": later}, {"expires_at": None}):
        r = await ingest.client.patch(f"/v1/messages/{mid}", json=body,
                                      headers=auth(keys["admin"]))
        assert r.status_code == 409, r.text
        assert "expired" in r.json()["detail"]
    assert [e for e in await published(ingest.settings)
            if e.kind == "message.expiry_changed"] == []
