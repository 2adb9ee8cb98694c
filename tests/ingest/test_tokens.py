"""User tokens (``smt_...``) on the sending and admin routes: dead tokens, scopes, the
admin role, the own-address rule and the external replier's allowed recipients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from secmsg.shared import mongo
from tests.ingest.access_helpers import add_message, add_user, audits, auth, make_token
from tests.ingest.conftest import BOUNDARY, TENANT, Ingest, env_part, envelope, multipart


async def send(ingest: Ingest, token: str, **fields: object) -> object:
    body = multipart([env_part(envelope(**fields))])
    return await ingest.client.post("/v1/messages", content=body, headers={
        **auth(token), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


async def test_tenant_user_token_sends_as_itself_only(ingest: Ingest) -> None:
    await add_user(ingest.db, tenant=TENANT, email="Alice@acme.example", role="sender")
    token, token_id = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                       scopes=["send"])
    r = await send(ingest, token, **{"from": "alice@acme.example", "to": ["x@example.org"]})
    assert r.status_code == 202, r.text
    events = await ingest.events()
    assert events[-1].submitted_by == "alice@acme.example"
    # retrieve owns ``tokens``; ingest records its uses in ``token_use``.
    doc = await ingest.db[mongo.TOKEN_USE].find_one({"_id": token_id})
    assert doc["last_used_at"] is not None and doc["tenant_id"] == TENANT
    assert (await ingest.db[mongo.TOKENS].find_one({"token_id": token_id}))["last_used_at"] \
        is None

    r = await send(ingest, token, **{"from": "boss@acme.example"})
    assert r.status_code == 403 and "own address" in r.json()["detail"]


async def test_dead_tokens_are_401(ingest: Ingest) -> None:
    now = datetime.now(UTC)
    await add_user(ingest.db, tenant=TENANT, email="alice@acme.example", role="sender")
    expired, _ = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                  scopes=["send"], expires_at=now - timedelta(seconds=1))
    revoked, rid = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                    scopes=["send"])
    await ingest.db[mongo.TOKENS].update_one({"token_id": rid}, {"$set": {"revoked_at": now}})
    old, _ = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                              scopes=["send"], created_at=now - timedelta(hours=1))
    await ingest.db[mongo.ACCOUNTS].insert_one({
        "_id": f"{TENANT}:alice@acme.example", "tenant_id": TENANT,
        "email": "alice@acme.example", "sessions_valid_after": now - timedelta(minutes=1)})
    for token in (expired, revoked, old, "smt_nope_nope"):
        r = await send(ingest, token, **{"from": "alice@acme.example"})
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"
    fresh, _ = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                scopes=["send"])
    assert (await send(ingest, fresh, **{"from": "alice@acme.example"})).status_code == 202


async def test_scopes_and_admin_role(ingest: Ingest) -> None:
    reader, _ = await make_token(ingest.db, tenant=TENANT, email="bob@example.org",
                                 scopes=["read"])
    r = await send(ingest, reader, **{"from": "bob@example.org"})
    assert r.status_code == 403 and "'send'" in r.json()["detail"]

    # An admin-scoped token counts only while its address is a tenant admin.
    await add_user(ingest.db, tenant=TENANT, email="carol@acme.example", role="sender")
    token, _ = await make_token(ingest.db, tenant=TENANT, email="carol@acme.example",
                                scopes=["admin"])
    r = await ingest.client.get("/v1/admin/smtp", headers=auth(token))
    assert r.status_code == 403 and "not an admin" in r.json()["detail"]
    await ingest.db[mongo.TENANT_USERS].update_one({"_id": f"{TENANT}:carol@acme.example"},
                                                   {"$set": {"role": "admin"}})
    r = await ingest.client.get("/v1/admin/smtp", headers=auth(token))
    assert r.status_code == 200, r.text


async def test_external_replier_may_write_only_to_users_and_its_senders(
        ingest: Ingest) -> None:
    await add_user(ingest.db, tenant=TENANT, email="doc@acme.example", role="sender")
    original = await add_message(ingest.db, tenant=TENANT, sender="Nurse@Acme.example",
                                 to=["patient@example.org"])
    other = await add_message(ingest.db, tenant=TENANT, sender="nurse@acme.example",
                              to=["someone@example.org"])
    token, _ = await make_token(ingest.db, tenant=TENANT, email="patient@example.org",
                                scopes=["send"], client="webmail")
    me = {"from": "patient@example.org"}

    r = await send(ingest, token, **me, to=["nurse@acme.example", "doc@acme.example"],
                   in_reply_to=original)
    assert r.status_code == 202, r.text
    replied = await audits(ingest.settings, "message.replied")
    assert [(e.message_id, e.actor) for e in replied] == [(original, "patient@example.org")]
    assert replied[0].detail == {"reply_id": r.json()["message_id"]}

    r = await send(ingest, token, **me, to=["stranger@example.net"])
    assert r.status_code == 403 and "stranger@example.net" in r.json()["detail"]
    # Replying to a message addressed to someone else is refused.
    r = await send(ingest, token, **me, to=["nurse@acme.example"], in_reply_to=other)
    assert r.status_code == 400
    r = await send(ingest, token, **me, to=["nurse@acme.example"], in_reply_to="nope")
    assert r.status_code == 400
    assert len(await ingest.events()) == 1  # only the first, allowed reply
