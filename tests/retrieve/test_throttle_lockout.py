"""Throttles that slow attackers without locking the owner out (ASVS 5.0 V6.3), over real
HTTPS to a real retrieve process, each client from its own loopback source address.

* Password guesses from many addresses hit the account-wide back-off (429), yet the owner
  with a valid emailed code still signs in -- under ``password+code`` too, where the owner
  once got the attackers' 429.
* Authenticator (TOTP) guesses are capped per account, whatever the source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pyotp

from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from secmsg.retrieve import totp
from secmsg.shared import mongo
from secmsg.shared.settings import CommonSettings
from tests.retrieve.accounts_helpers import GOOD_PASSWORD, set_policy
from tests.retrieve.helpers import TENANT, Seeder, last_code

PAT = "pat.owner@example.org"
OWNER_IP = "127.0.0.1"
WRONG = "wrong horse battery staple nine"
LIMITS = {"SECMSG_RETRIEVE_VERIFY_ATTEMPTS_PER_ADDRESS": 4,  # per (account, source)
          "SECMSG_RETRIEVE_PASSWORD_ATTEMPTS_PER_ACCOUNT": 5,  # all sources together
          "SECMSG_RETRIEVE_TOTP_ATTEMPTS_PER_ACCOUNT": 3}


def client_at(svc: ServiceProc, ip: str) -> httpx.AsyncClient:
    """A client whose connections come from ``ip`` (any 127.x address is this host)."""
    return httpx.AsyncClient(base_url=svc.base_url, timeout=30,
                             transport=httpx.AsyncHTTPTransport(verify=False, local_address=ip))


async def emailed_code(c: httpx.AsyncClient, sink: Sink, purpose: str = "signin") -> str:
    before = len(sink.handler.for_recipient(PAT))
    r = await c.post("/v1/auth/code", json={"tenant_id": TENANT, "email": PAT,
                                            "purpose": purpose})
    assert r.status_code == 202, r.text
    for _ in range(300):  # sent after the answer
        if len(sink.handler.for_recipient(PAT)) > before:
            return last_code(sink, PAT)
        await asyncio.sleep(0.05)
    raise AssertionError("no code mail")


async def signin(c: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await c.post("/v1/auth/signin", json={"tenant_id": TENANT, "email": PAT, **body})


async def _owner_registered(svc: ServiceProc, seeder: Seeder, sink: Sink) -> None:
    await seeder.message(to=[PAT])
    async with client_at(svc, OWNER_IP) as owner:
        r = await owner.post("/v1/auth/register", json={
            "tenant_id": TENANT, "email": PAT, "password": GOOD_PASSWORD,
            "code": await emailed_code(owner, sink, "register")})
        assert r.status_code == 200, r.text


async def test_password_guessing_is_throttled_but_the_owner_gets_in_with_the_code(
        services: Callable[..., ServiceProc], seeder: Seeder, sink: Sink,
        mongo_db: Any) -> None:
    svc = services("retrieve", **LIMITS)
    await _owner_registered(svc, seeder, sink)

    await set_policy(mongo_db, signin="password+code")
    # One attacker address: its own (account, source) limit stops it after 4 tries.
    async with client_at(svc, "127.0.0.2") as attacker:
        for _ in range(4):
            assert (await signin(attacker, password=WRONG, code="12345678")).status_code == 401
        r = await signin(attacker, password=WRONG, code="12345678")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # Spread over more addresses: the account-wide back-off (5 tries) stops them too.
    statuses = []
    for ip in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        async with client_at(svc, ip) as attacker:
            statuses.append((await signin(attacker, password=WRONG,
                                          code="87654321")).status_code)
    assert statuses == [401, 429, 429]
    # The owner, with a valid emailed code and the password: signed in, not 429.
    async with client_at(svc, OWNER_IP) as owner:
        r = await signin(owner, password=GOOD_PASSWORD, code=await emailed_code(owner, sink))
        assert r.status_code == 200, r.text

    await set_policy(mongo_db, signin="password")
    async with client_at(svc, OWNER_IP) as owner:
        # Passwords are throttled for everyone now, the owner's too ...
        r = await signin(owner, password=GOOD_PASSWORD)
        assert r.status_code == 429
        # ... but the emailed code alone still signs the owner in.
        r = await signin(owner, code=await emailed_code(owner, sink))
        assert r.status_code == 200, r.text


async def test_totp_guessing_is_capped_per_account(
        services: Callable[..., ServiceProc], seeder: Seeder, sink: Sink, mongo_db: Any,
        settings: CommonSettings) -> None:
    # (a generous password limit: every try here brings the right password)
    svc = services("retrieve", **{**LIMITS, "SECMSG_RETRIEVE_PASSWORD_ATTEMPTS_PER_ACCOUNT": 50})
    await _owner_registered(svc, seeder, sink)
    secret = totp.new_secret()
    await mongo_db[mongo.ACCOUNTS].update_one(
        {"_id": f"{TENANT}:{PAT}"},
        {"$set": {"totp_secret_sealed": totp.seal(settings.key_ring, TENANT, secret)}})
    await set_policy(mongo_db, signin="password")
    right = pyotp.TOTP(secret).now()
    wrong = "000000" if right != "000000" else "111111"

    # Someone with the password guesses the authenticator code, each try from a new address
    # (so no per-source limit applies): the account-wide cap answers 429 after 3.
    statuses = []
    for n in range(5):
        async with client_at(svc, f"127.0.1.{n + 1}") as attacker:
            first = await signin(attacker, password=GOOD_PASSWORD)
            assert first.status_code == 202, first.text  # the first factor is right
            r = await attacker.post("/v1/auth/totp", json={
                "mfa_ticket": first.json()["mfa_ticket"], "totp": wrong})
            statuses.append(r.status_code)
    assert statuses == [401, 401, 401, 429, 429]
    # Capped means capped: while it lasts, even the right code is not tried (no oracle).
    async with client_at(svc, "127.0.1.9") as attacker:
        r = await signin(attacker, password=GOOD_PASSWORD, totp=right)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
