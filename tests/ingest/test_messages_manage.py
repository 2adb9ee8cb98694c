"""Expiry, revocation, recall and the delivery slip of a sent message: who may (admin, the
submitting key, the sending token), 404 for everything else, idempotency, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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


def _no_null(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _no_null(v)
    elif isinstance(value, list):
        for v in value:
            _no_null(v)
    else:
        assert value is not None


async def test_slip(ingest: Ingest, keys: dict[str, str]) -> None:
    """Every per-recipient state from the documents store writes: sent + opened + downloaded
    by name (two range requests of one file are one file), fetched and acknowledged by a
    toolbar, deferred with reason and next try, bounced, failed, and queued (no state yet).
    Nothing in the JSON is null."""
    people = ["bob@example.org", "carol@example.org", "erin@example.org", "fay@example.org",
              "gil@example.org"]
    mid = await add_message(ingest.db, tenant=TENANT, sender="alice@acme.example",
                            to=people, bcc=["dan@example.org"],
                            submitted_by=f"api_key:{keys['sender_id']}")
    scan, notes = "ab" * 16, "cd" * 16
    await ingest.db[mongo.MESSAGES].update_one({"_id": mid}, {"$set": {"objects": [
        {"object_id": scan, "key": "k1", "role": "attachment", "filename": "scan.pdf",
         "content_type": "application/pdf", "size": 10, "sha256": "", "wrapped_key": "",
         "segment_size": 1},
        {"object_id": notes, "key": "k2", "role": "attachment", "filename": "notes.txt",
         "content_type": "text/plain", "size": 10, "sha256": "", "wrapped_key": "",
         "segment_size": 1}]}})
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def status(who: str, state: str, **extra: Any) -> dict[str, Any]:
        return {"_id": f"{mid}:{who}", "tenant_id": TENANT, "message_id": mid,
                "recipient": who, "state": state, "attempt": 1, "reason": None,
                "updated_at": t0, "occurred_at": t0, **extra}

    await ingest.db[mongo.DELIVERY_STATUS].insert_many([
        status("bob@example.org", "sent"),
        status("carol@example.org", "failed", attempt=3, reason="permanent_rejection"),
        status("erin@example.org", "deferred", attempt=2, reason="timeout",
               retry_at=t0 + timedelta(minutes=2)),
        status("fay@example.org", "bounced", reason="mailbox_unknown", bounce_status="5.1.1",
               hard=True)])

    def audit(n: int, kind: str, who: str, minutes: int, **extra: Any) -> dict[str, Any]:
        return {"_id": f"e{n}", "tenant_id": TENANT, "message_id": mid, "kind": kind,
                "actor": who, "recipient": who, "subject_address": who, "detail": {},
                "at": t0 + timedelta(minutes=minutes), **extra}

    await ingest.db[mongo.AUDIT].insert_many([
        audit(1, "message.opened", "bob@example.org", 5),
        audit(2, "message.opened", "bob@example.org", 9),
        audit(3, "attachment.downloaded", "bob@example.org", 6, object_id=scan,
              range_start=0, range_end=4),
        audit(4, "attachment.downloaded", "bob@example.org", 7, object_id=scan,
              range_start=5, range_end=9),
        audit(5, "message.fetched", "gil@example.org", 3),
        audit(6, "message.acknowledged", "gil@example.org", 4),
        audit(7, "message.fetched", "dan@example.org", 8),
        # not a reader fact: never on the slip
        audit(8, "signin.succeeded", "carol@example.org", 1)])
    r = await ingest.client.get(f"/v1/messages/{mid}/slip", headers=auth(keys["sender"]))
    assert r.status_code == 200, r.text
    _no_null(r.json())
    lines = {x["address"]: x for x in r.json()["recipients"]}
    bob, carol, erin, fay, gil, dan = (lines[f"{n}@example.org"]
                                       for n in ("bob", "carol", "erin", "fay", "gil", "dan"))

    assert bob["status"] == "downloaded"
    assert bob["notification"] == {"state": "sent", "at": "2030-01-01T00:00:00Z", "attempts": 1}
    assert bob["opened"] == 2
    assert datetime.fromisoformat(bob["first_opened_at"]) == t0 + timedelta(minutes=5)
    assert datetime.fromisoformat(bob["last_opened_at"]) == t0 + timedelta(minutes=9)
    assert bob["downloads"] == [{"file_name": "scan.pdf", "object_id": scan, "times": 2,
                                 "first_at": "2030-01-01T00:06:00Z",
                                 "last_at": "2030-01-01T00:07:00Z"}]
    assert bob["toolbar"] == {"fetched": 0}
    assert "downloaded scan.pdf" in bob["summary"] and "opened 2 times" in bob["summary"]

    assert erin["status"] == "deferred"
    assert erin["notification"] == {"state": "deferred", "at": "2030-01-01T00:00:00Z",
                                    "attempts": 2, "reason": "timeout",
                                    "next_attempt_at": "2030-01-01T00:02:00Z"}
    assert erin["summary"].startswith("Notification deferred (timeout, attempt 2); next try "
                                      "2030-01-01 00:02 UTC")
    assert fay["status"] == "bounced"
    assert fay["notification"]["bounce_status"] == "5.1.1"
    assert fay["notification"]["reason"] == "mailbox_unknown"
    assert carol["status"] == "failed" and carol["opened"] == 0 and carol["downloads"] == []
    assert carol["notification"]["reason"] == "permanent_rejection"
    assert "first_opened_at" not in carol

    assert gil["status"] == "acknowledged_by_toolbar"
    assert gil["notification"]["state"] == "queued"  # notify has not reported on gil yet
    assert gil["toolbar"] == {"fetched": 1, "last_fetched_at": "2030-01-01T00:03:00Z",
                              "acknowledged_at": "2030-01-01T00:04:00Z"}
    assert dan["kind"] == "bcc" and dan["status"] == "fetched_by_toolbar"
    assert dan["notification"]["state"] == "queued"
    assert "fetched by toolbar" in dan["summary"]

    r = await ingest.client.get(f"/v1/messages/{mid}/slip", headers=auth(keys["other"]))
    assert r.status_code == 404


async def test_slip_of_a_message_the_sender_server_delivers(ingest: Ingest,
                                                            keys: dict[str, str]) -> None:
    """RFC 5322 submissions (``notify`` false): not ``queued`` for ever, but ``not_sent``."""
    mid = await add_message(ingest.db, tenant=TENANT, sender="alice@acme.example",
                            to=["bob@example.org"], submitted_by=f"api_key:{keys['sender_id']}")
    await ingest.db[mongo.MESSAGES].update_one({"_id": mid}, {"$set": {"notify": False}})
    r = await ingest.client.get(f"/v1/messages/{mid}/slip", headers=auth(keys["sender"]))
    assert r.status_code == 200, r.text
    (bob,) = r.json()["recipients"]
    assert bob["status"] == "not_notified"
    assert bob["notification"]["state"] == "not_sent"
    assert bob["notification"]["reason"] == "sender_mail_server"
    _no_null(r.json())


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
