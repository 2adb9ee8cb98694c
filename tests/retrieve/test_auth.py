"""Sign-in by emailed one-time code, sessions and rate limits, against the real servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.retrieve.service import hash_code
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.shared import mongo
from tests.retrieve.helpers import (
    ALICE,
    BOB,
    OTHER_TENANT,
    TENANT,
    Running,
    Seeder,
    bearer,
    last_code,
    sign_in,
)

WRONG = {"error": "unauthorized",
         "detail": "the sign-in details are wrong, expired or already used"}


async def ask_code(app: Running, email: str = BOB, tenant_id: str = TENANT) -> Any:
    return await app.client.post("/v1/auth/code", json={"tenant_id": tenant_id, "email": email})


async def verify(app: Running, code: str, email: str = BOB, tenant_id: str = TENANT) -> Any:
    return await app.client.post("/v1/auth/session",
                                 json={"tenant_id": tenant_id, "email": email, "code": code})


def wrong_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**8:08d}"


async def test_code_flow_signs_in(app: Running, seeder: Seeder, sink: Sink,
                                  mongo_db: Any) -> None:
    msg = await seeder.message(subject="Biopsy results")
    r = await ask_code(app, email="  BOB@example.ORG ")
    assert r.status_code == 202
    assert r.json() == {"status": "sent_if_known"}

    mails = sink.handler.for_recipient("bob@example.org")
    assert len(mails) == 1
    mail = mails[0].message
    assert mail["Subject"] == "Your sign-in code"
    code = last_code(sink, "bob@example.org")
    plain = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "ACME Medical" in plain and "ACME Medical" in html and code in html
    assert "Biopsy" not in mails[0].data.decode()  # no message content in the code email

    stored = await mongo_db[mongo.LOGIN_CODES].find_one({})
    assert code not in str(stored)  # only the keyed hash is stored
    assert stored["code_hash"] == hash_code(app.deps.settings.code_pepper, TENANT,
                                            "bob@example.org", code)

    r = await verify(app, code)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert len(token) >= 43 and r.json()["expires_at"]
    cookie = r.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert await mongo_db[mongo.SESSIONS].find_one({"_id": token}) is None  # hashed at rest

    listing = await app.client.get("/v1/messages", headers=bearer(token))
    assert listing.status_code == 200
    assert [m["id"] for m in listing.json()["messages"]] == [msg.message_id]


async def test_cookie_authenticates_and_logout_ends_session(app: Running, seeder: Seeder,
                                                            sink: Sink) -> None:
    await seeder.message()
    token = await sign_in(app.client, sink)
    cookie = {"Cookie": f"{app.deps.settings.cookie_name}={token}"}
    assert (await app.client.get("/v1/messages", headers=cookie)).status_code == 200

    r = await app.client.post("/v1/auth/logout", headers=bearer(token))
    assert r.status_code == 204
    for headers in (bearer(token), cookie):
        r = await app.client.get("/v1/messages", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
    assert (await app.client.get("/v1/messages")).status_code == 401


async def test_unknown_address_gets_same_answer_and_no_mail(app: Running, seeder: Seeder,
                                                            sink: Sink) -> None:
    await seeder.message(to=[BOB])
    await seeder.message(to=[ALICE], state="purged")
    known = await ask_code(app, BOB)
    for email, tenant in (("nobody@example.org", TENANT), (ALICE, TENANT),
                          (BOB, OTHER_TENANT), (BOB, "no-such-tenant")):
        r = await ask_code(app, email, tenant)
        assert (r.status_code, r.json()) == (known.status_code, known.json())
    assert [m.rcpt_tos for m in sink.messages] == [["bob@example.org"]]


async def test_wrong_code_then_right_code(app: Running, seeder: Seeder, sink: Sink) -> None:
    await seeder.message()
    await ask_code(app)
    code = last_code(sink, BOB)
    for bad in (wrong_code(code), "abc", "1234567"):
        r = await verify(app, bad)
        assert (r.status_code, r.json()) == (401, WRONG)
    assert (await verify(app, code)).status_code == 200


async def test_code_is_single_use(app: Running, seeder: Seeder, sink: Sink) -> None:
    await seeder.message()
    await ask_code(app)
    code = last_code(sink, BOB)
    results = await asyncio.gather(*(verify(app, code) for _ in range(3)))
    assert sorted(r.status_code for r in results) == [200, 401, 401]
    r = await verify(app, code)
    assert (r.status_code, r.json()) == (401, WRONG)


async def test_expired_code_refused(make_app: Any, seeder: Seeder, sink: Sink) -> None:
    app = await make_app(code_ttl_s=1)
    await seeder.message()
    await ask_code(app)
    app.shift_clock(2)
    r = await verify(app, last_code(sink, BOB))
    assert (r.status_code, r.json()) == (401, WRONG)


async def test_five_wrong_tries_kill_the_code(app: Running, seeder: Seeder,
                                              sink: Sink) -> None:
    await seeder.message()
    await ask_code(app)
    code = last_code(sink, BOB)
    for _ in range(5):
        assert (await verify(app, wrong_code(code))).status_code == 401
    r = await verify(app, code)
    assert (r.status_code, r.json()) == (401, WRONG)
    # A fresh code works again.
    await ask_code(app)
    new = last_code(sink, BOB)
    assert (await verify(app, new)).status_code == 200


async def test_new_code_replaces_old(app: Running, seeder: Seeder, sink: Sink) -> None:
    await seeder.message()
    await ask_code(app)
    first = last_code(sink, BOB)
    await ask_code(app)
    second = last_code(sink, BOB)
    if first != second:
        assert (await verify(app, first)).status_code == 401
    assert (await verify(app, second)).status_code == 200


async def test_code_requests_rate_limited_per_address(app: Running, seeder: Seeder,
                                                      sink: Sink) -> None:
    await seeder.message()
    for _ in range(5):
        assert (await ask_code(app)).status_code == 202
    r = await ask_code(app)
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_requests"
    assert 1 <= int(r.headers["retry-after"]) <= 900
    assert len(sink.handler.for_recipient(BOB)) == 5
    # Another address from the same client is still served.
    assert (await ask_code(app, ALICE)).status_code == 202


async def test_code_requests_rate_limited_per_ip(make_app: Any) -> None:
    app = await make_app(code_requests_per_ip=3)
    for i in range(3):
        assert (await ask_code(app, f"user{i}@example.org")).status_code == 202
    r = await ask_code(app, "user9@example.org")
    assert r.status_code == 429 and "retry-after" in r.headers


async def test_verification_attempts_rate_limited(make_app: Any, seeder: Seeder,
                                                  sink: Sink) -> None:
    app = await make_app(verify_attempts_per_address=3)
    await seeder.message()
    await ask_code(app)
    code = last_code(sink, BOB)
    for _ in range(3):
        assert (await verify(app, wrong_code(code))).status_code == 401
    r = await verify(app, code)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


async def test_idle_session_expires(app: Running, seeder: Seeder, sink: Sink) -> None:
    await seeder.message()
    token = await sign_in(app.client, sink)
    app.shift_clock(app.deps.settings.session_idle_s - 60)
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 200
    # Use keeps it alive; a gap longer than the idle timeout ends it.
    app.shift_clock(app.deps.settings.session_idle_s + 1)
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 401


async def test_absolute_session_lifetime(make_app: Any, seeder: Seeder, sink: Sink) -> None:
    app = await make_app(session_idle_s=100, session_max_s=250)
    await seeder.message()
    token = await sign_in(app.client, sink)
    for _ in range(2):
        app.shift_clock(90)
        assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 200
    app.shift_clock(90)  # 270 s after sign-in: active, but past the absolute limit
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 401


async def test_invalid_requests_are_422(app: Running) -> None:
    r = await app.client.post("/v1/auth/code", json={"tenant_id": "Bad Tenant!", "email": BOB})
    assert r.status_code == 422 and r.json()["error"] == "invalid_input"
    r = await app.client.post("/v1/auth/code", json={"tenant_id": TENANT, "email": "no-at"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_input"


def test_dev_pepper_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECMSG_ENVIRONMENT", "production")
    monkeypatch.delenv("SECMSG_RETRIEVE_CODE_PEPPER", raising=False)
    with pytest.raises(ValueError, match="CODE_PEPPER"):
        RetrieveSettings()
    monkeypatch.setenv("SECMSG_RETRIEVE_CODE_PEPPER", "a-real-pepper-from-the-secret-store")
    assert RetrieveSettings().environment == "production"
    with pytest.raises(ValueError):
        RetrieveSettings(code_ttl_s=601)
