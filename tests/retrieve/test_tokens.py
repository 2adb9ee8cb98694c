"""Bearer ``smt_`` tokens: authenticate like a session for ``read``, die when revoked,
expired or signed out everywhere; only hashes at rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from devstack.smtp_sink import Sink
from secmsg.retrieve import tokens
from secmsg.retrieve.ports import SessionRecord
from secmsg.shared import mongo
from tests.retrieve.helpers import BOB, TENANT, Running, Seeder, bearer, sign_in


async def mint(app: Running, scopes: list[str], ttl: timedelta | None = None,
               email: str = "bob@example.org") -> tokens.IssuedToken:
    d = app.deps
    return await tokens.issue_token(tokens=d.tokens, accounts=d.accounts, audit=d.audit,
                                    tenant_id=TENANT, email=email, scopes=scopes,
                                    client="toolbar", ttl=ttl, now=d.clock())


async def test_read_token_authenticates_like_a_session(app: Running, seeder: Seeder,
                                                       mongo_db: Any) -> None:
    msg = await seeder.message()
    issued = await mint(app, ["read"])
    assert issued.token.startswith(f"smt_{issued.token_id}_")
    r = await app.client.get("/v1/messages", headers=bearer(issued.token))
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["messages"]] == [msg.message_id]
    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(issued.token))
    assert r.status_code == 200 and r.json()["text"] == "Hello Bob"

    doc = await mongo_db[mongo.TOKENS].find_one({"token_id": issued.token_id})
    assert doc["_id"] == tokens.hash_token(issued.token)
    assert issued.token not in str(doc)  # only the hash is stored
    assert doc["scopes"] == ["read"] and doc["client"] == "toolbar"

    who = await app.deps.tokens.get(tokens.hash_token(issued.token))
    assert who is not None and who.email == "bob@example.org"
    session = await tokens.verify_token(token=issued.token, tokens=app.deps.tokens,
                                        accounts=app.deps.accounts, now=app.deps.clock())
    assert (session.via, session.token_id, session.tenant_id, session.address) == (
        "token", issued.token_id, TENANT, "bob@example.org")


async def test_send_only_token_cannot_read(app: Running, seeder: Seeder) -> None:
    await seeder.message()
    issued = await mint(app, ["send"])
    r = await app.client.get("/v1/messages", headers=bearer(issued.token))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


async def test_revoked_expired_and_forged_tokens_are_refused(app: Running,
                                                             seeder: Seeder) -> None:
    await seeder.message()
    revoked = await mint(app, ["read"])
    short = await mint(app, ["read"], ttl=timedelta(seconds=30))
    owner = SessionRecord(token_hash="x", tenant_id=TENANT, address="bob@example.org",
                          expires_at=None)
    await tokens.revoke_token(tokens=app.deps.tokens, audit=app.deps.audit, session=owner,
                              token_id=revoked.token_id, now=app.deps.clock())
    r = await app.client.get("/v1/messages", headers=bearer(revoked.token))
    assert r.status_code == 401
    assert (await app.client.get("/v1/messages", headers=bearer(short.token))).status_code == 200
    app.shift_clock(31)
    assert (await app.client.get("/v1/messages", headers=bearer(short.token))).status_code == 401
    forged = revoked.token[:-4] + "AAAA"
    assert (await app.client.get("/v1/messages", headers=bearer(forged))).status_code == 401
    assert (await app.client.get("/v1/messages",
                                 headers=bearer("smt_nothing"))).status_code == 401


async def test_webmail_send_token_is_short_lived_and_needs_a_session(
        app: Running, seeder: Seeder, sink: Sink) -> None:
    await seeder.message()
    session_token = await sign_in(app.client, sink)
    d = app.deps
    from secmsg.retrieve import service

    session = await service.authenticate(token=session_token, sessions=d.sessions,
                                         settings=d.settings, now=d.clock(), tokens=d.tokens,
                                         accounts=d.accounts)
    assert session.via == "session" and session.address == BOB.lower()
    issued = await tokens.issue_webmail_send_token(tokens=d.tokens, accounts=d.accounts,
                                                   audit=d.audit, session=session,
                                                   now=d.clock())
    assert issued.scopes == ("send",)
    assert issued.expires_at is not None
    assert issued.expires_at - d.clock() <= tokens.WEBMAIL_SEND_TTL
    record = await d.tokens.get(tokens.hash_token(issued.token))
    assert record is not None and record.client == "webmail"
    assert d.settings.ingest_url.startswith("http")


async def test_what_ingest_records_about_a_token_reaches_retrieve(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any) -> None:
    """retrieve owns ``tokens``; ingest writes only its own collections: a use at ingest goes
    to ``token_use`` and an admin's revocation to ``revocations``. Both show here: the last
    use in the owner's token list, the revocation as a refused token."""
    from secmsg.ingest.adapters.mongo import MongoTenantDirectory
    from secmsg.ingest.adapters.mongo_admin import MongoAccessRepo

    await seeder.message()
    issued = await mint(app, ["read", "send"])
    creds = await MongoTenantDirectory(mongo_db).authenticate(issued.token)  # a send at ingest
    assert creds is not None and creds.token_id == issued.token_id
    session = await sign_in(app.client, sink)
    r = await app.client.get("/v1/tokens", headers=bearer(session))
    row = next(t for t in r.json()["tokens"] if t["token_id"] == issued.token_id)
    assert row["last_used_at"] is not None and row["revoked_at"] is None and row["active"]
    assert (await mongo_db[mongo.TOKENS].find_one({"token_id": issued.token_id})
            )["last_used_at"] is None  # ingest never wrote retrieve's document

    before = await MongoAccessRepo(mongo_db).revoke_token(
        TENANT, issued.token_id, now=app.deps.clock(), by="key:k1")
    assert before is not None and before["revoked_at"] is None
    r = await app.client.get("/v1/messages", headers=bearer(issued.token))
    assert r.status_code == 401
    assert await MongoTenantDirectory(mongo_db).authenticate(issued.token) is None
    r = await app.client.get("/v1/tokens", headers=bearer(session))
    row = next(t for t in r.json()["tokens"] if t["token_id"] == issued.token_id)
    assert row["revoked_at"] is not None and not row["active"]
