"""ASVS 5.0 V6 (authentication) against the real servers: registration, password policy,
sign-in per tenant policy, TOTP, reset, throttling and no enumeration (docs/security.md)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pyotp
import pytest

from devstack.smtp_sink import Sink
from secmsg.retrieve import passwords, totp
from secmsg.shared import crypto, mongo
from tests.retrieve.accounts_helpers import (
    GOOD_PASSWORD,
    client_from,
    fresh_code,
    register,
    set_policy,
)
from tests.retrieve.helpers import TENANT, Running, Seeder, audit_events, bearer

PAT = "pat@example.org"
BAD = {"error": "unauthorized",
       "detail": "the sign-in details are wrong, expired or already used"}


async def signin(app: Running, **body: Any) -> Any:
    return await app.client.post("/v1/auth/signin",
                                 json={"tenant_id": TENANT, "email": PAT, **body})


async def test_registration_from_the_link_needs_one_code_and_one_password(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any, settings: Any) -> None:
    msg = await seeder.message(to=[PAT])
    page = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    assert page.status_code == 200
    # Fields a person types: the address on the link page, then the code and a password.
    typed = page.text.count('type="email"')
    code = await fresh_code(app, sink, PAT, "register")
    body = {"tenant_id": TENANT, "email": PAT, "code": code, "password": GOOD_PASSWORD}
    typed_at_register = len({"code", "password"})
    r = await app.client.post("/v1/auth/register", json=body)
    assert r.status_code == 200, r.text
    assert typed == 1 and typed_at_register == 2  # email (autofilled by browsers) + 2
    token = r.json()["token"]
    listing = await app.client.get("/v1/messages", headers=bearer(token))
    assert [m["id"] for m in listing.json()["messages"]] == [msg.message_id]

    doc = await mongo_db[mongo.ACCOUNTS].find_one({"_id": f"{TENANT}:{PAT}"})
    assert doc["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert GOOD_PASSWORD not in str(doc) and doc["registered_at"] is not None
    # Registering again is refused (409) even with a fresh code: reset is the way.
    code = await fresh_code(app, sink, PAT, "register")
    r = await app.client.post("/v1/auth/register", json={**body, "code": code})
    assert r.status_code == 409
    kinds = [e.get("action") for e in await audit_events(settings)]
    assert "recipient.registered" in kinds


@pytest.mark.parametrize("weak", ["short pass", "password1234",
                                  "aaaaaaaaaaaaaaaa", "pat@example.org!"])
async def test_weak_passwords_refused_without_burning_the_code(
        app: Running, seeder: Seeder, sink: Sink, weak: str) -> None:
    await seeder.message(to=[PAT])
    code = await fresh_code(app, sink, PAT, "register")
    r = await app.client.post("/v1/auth/register", json={
        "tenant_id": TENANT, "email": PAT, "code": code, "password": weak})
    assert r.status_code == 400 and r.json()["error"] == "weak_password"
    r = await app.client.post("/v1/auth/register", json={
        "tenant_id": TENANT, "email": PAT, "code": code, "password": GOOD_PASSWORD})
    assert r.status_code == 200


async def test_password_policy_and_code_fallback(app: Running, seeder: Seeder, sink: Sink,
                                                 mongo_db: Any) -> None:
    await seeder.message(to=[PAT])
    first = await register(app, sink, PAT)
    await set_policy(mongo_db, signin="password")
    r = await signin(app, password=GOOD_PASSWORD)
    assert r.status_code == 200 and r.json()["token"] != first  # a new token each sign-in
    r = await signin(app, password=GOOD_PASSWORD + "x")
    assert (r.status_code, r.json()) == (401, BAD)
    r = await signin(app, code=await fresh_code(app, sink, PAT))  # the fallback
    assert r.status_code == 200

    await set_policy(mongo_db, signin="password+code")
    r = await signin(app, password=GOOD_PASSWORD)  # password alone is not enough
    assert (r.status_code, r.json()) == (401, BAD)
    r = await signin(app, code=await fresh_code(app, sink, PAT))  # nor the code alone
    assert (r.status_code, r.json()) == (401, BAD)
    r = await signin(app, password=GOOD_PASSWORD, code=await fresh_code(app, sink, PAT))
    assert r.status_code == 200

    await set_policy(mongo_db, signin="code")
    r = await signin(app, password=GOOD_PASSWORD)  # policy code: passwords do nothing
    assert (r.status_code, r.json()) == (401, BAD)


async def test_totp_enrol_confirm_required_and_replay_refused(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any) -> None:
    await seeder.message(to=[PAT])
    token = await register(app, sink, PAT)
    r = await app.client.post("/v1/account/totp", headers=bearer(token))
    assert r.status_code == 200
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/")
    gen = pyotp.TOTP(secret)
    r = await app.client.post("/v1/account/totp/confirm", headers=bearer(token),
                              json={"code": gen.at(app.deps.clock())})
    assert r.status_code == 204
    doc = await mongo_db[mongo.ACCOUNTS].find_one({"_id": f"{TENANT}:{PAT}"})
    assert secret not in str(doc)
    assert app.deps.keyring.open_secret(TENANT, crypto.TOTP_SECRET_PURPOSE,
                                        doc["totp_secret_sealed"]) == secret

    r = await signin(app, code=await fresh_code(app, sink, PAT))
    assert r.status_code == 202 and r.json()["status"] == "totp_required"
    ticket = r.json()["mfa_ticket"]
    app.shift_clock(totp.STEP_S)  # the confirmation used the previous step
    now_code = gen.at(app.deps.clock())
    r = await app.client.post("/v1/auth/totp", json={"mfa_ticket": ticket, "totp": "000000"
                                                     if now_code != "000000" else "111111"})
    assert r.status_code == 401
    r = await app.client.post("/v1/auth/totp", json={"mfa_ticket": ticket, "totp": now_code})
    assert r.status_code == 200
    # The same step again (a replay), and the same ticket again, are refused.
    r2 = await signin(app, code=await fresh_code(app, sink, PAT), totp=now_code)
    assert (r2.status_code, r2.json()) == (401, BAD)
    r3 = await app.client.post("/v1/auth/totp", json={"mfa_ticket": ticket, "totp": now_code})
    assert r3.status_code == 401


async def test_password_reset_by_code_kills_old_sessions(app: Running, seeder: Seeder,
                                                         sink: Sink, mongo_db: Any,
                                                         settings: Any) -> None:
    await seeder.message(to=[PAT])
    old = await register(app, sink, PAT)
    code = await fresh_code(app, sink, PAT, "reset")
    new_pw = "violet harbour compass nineteen"
    r = await app.client.post("/v1/auth/password/reset", json={
        "tenant_id": TENANT, "email": PAT, "code": code, "password": new_pw})
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    assert (await app.client.get("/v1/messages", headers=bearer(old))).status_code == 401
    assert (await app.client.get("/v1/messages", headers=bearer(fresh))).status_code == 200
    r = await app.client.post("/v1/auth/password/reset", json={
        "tenant_id": TENANT, "email": PAT, "code": code, "password": new_pw})
    assert r.status_code == 401  # the code was single use
    await set_policy(mongo_db, signin="password")
    assert (await signin(app, password=new_pw)).status_code == 200
    assert (await signin(app, password=GOOD_PASSWORD)).status_code == 401
    assert "password.reset" in [e.get("action") for e in await audit_events(settings)]


async def test_account_wide_throttle_slows_spread_attackers_but_code_still_works(
        make_app: Any, seeder: Seeder, sink: Sink, mongo_db: Any) -> None:
    app = await make_app(password_attempts_per_account=3)
    await seeder.message(to=[PAT])
    await register(app, sink, PAT)
    await set_policy(mongo_db, signin="password")
    body = {"tenant_id": TENANT, "email": PAT, "password": "wrong wrong wrong wrong"}
    for i in range(3):
        async with client_from(app, f"203.0.113.{i + 1}") as c:
            assert (await c.post("/v1/auth/signin", json=body)).status_code == 401
    async with client_from(app, "203.0.113.99") as c:
        r = await c.post("/v1/auth/signin", json=body)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # The real user still gets in with an emailed code.
        r = await c.post("/v1/auth/signin", json={"tenant_id": TENANT, "email": PAT,
                                                   "code": await fresh_code(app, sink, PAT)})
        assert r.status_code == 200


async def test_unknown_and_known_addresses_answer_alike(make_app: Any, seeder: Seeder,
                                                        sink: Sink, mongo_db: Any) -> None:
    app = await make_app(verify_attempts_per_address=500, verify_attempts_per_ip=500,
                         password_attempts_per_account=500)
    await seeder.message(to=[PAT])
    await register(app, sink, PAT)
    await set_policy(mongo_db, signin="password")
    known = {"tenant_id": TENANT, "email": PAT, "password": "not the password at all"}
    unknown = {**known, "email": "nobody-here@example.org"}
    a = await app.client.post("/v1/auth/signin", json=known)
    b = await app.client.post("/v1/auth/signin", json=unknown)
    assert (a.status_code, a.json()) == (b.status_code, b.json()) == (401, BAD)

    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(24):  # interleaved, so load on the machine hits both alike
        for name, body in (("known", known), ("unknown", unknown))[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            r = await app.client.post("/v1/auth/signin", json=body)
            times[name].append(time.perf_counter() - t0)
            assert r.status_code == 401
    med_k, med_u = statistics.median(times["known"]), statistics.median(times["unknown"])
    spread = statistics.median(times["known"] + times["unknown"])
    # Without the dummy hash the unknown address skips Argon2 and is several times faster.
    assert abs(med_k - med_u) < 0.3 * spread, (med_k, med_u)


async def test_dummy_hash_costs_like_a_real_one() -> None:
    real = await passwords.hash_password(GOOD_PASSWORD)
    assert await passwords.verify_password(real, GOOD_PASSWORD)
    assert not await passwords.verify_password(real, "other")
    assert not await passwords.verify_password(None, GOOD_PASSWORD)
    # Unknown accounts are checked against a hash with the very same cost parameters.
    assert passwords._dummy_hash().split("$")[:4] == real.split("$")[:4]
