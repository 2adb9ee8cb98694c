"""Long passwords over real HTTPS to a real retrieve process: 73 to 128 characters register,
reset and sign in (they were a 500: zxcvbn refuses more than 72), longer ones are a 422 that
names the field, and a refused one never burns the emailed code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from secmsg.retrieve import passwords
from tests.retrieve.accounts_helpers import set_policy
from tests.retrieve.helpers import TENANT, Seeder, last_code

PAT = "pat.long@example.org"
# 100 characters, unrelated words: strong in its first 72 as a whole.
LONG = ("harbour violet sixteen umbrellas quietly juggle forty amber tangerines over "
        "seven frosty lighthouses")[:100]


async def _code(client: httpx.AsyncClient, sink: Sink, purpose: str) -> str:
    before = len(sink.handler.for_recipient(PAT))
    r = await client.post("/v1/auth/code",
                          json={"tenant_id": TENANT, "email": PAT, "purpose": purpose})
    assert r.status_code == 202, r.text
    for _ in range(200):  # the mail goes out after the response
        if len(sink.handler.for_recipient(PAT)) > before:
            return last_code(sink, PAT)
        await asyncio.sleep(0.05)
    raise AssertionError("no code mail")


async def test_passwords_up_to_the_maximum_work_longer_ones_get_422(
        services: Callable[..., ServiceProc], seeder: Seeder, sink: Sink,
        mongo_db: Any) -> None:
    assert len(LONG) == 100 and passwords.MAX_LENGTH == 128
    await seeder.message(to=[PAT])
    await set_policy(mongo_db, signin="password")
    svc = services("retrieve")
    async with httpx.AsyncClient(base_url=svc.base_url, verify=False, timeout=30) as client:
        code = await _code(client, sink, "register")
        body = {"tenant_id": TENANT, "email": PAT, "code": code}
        # Over the maximum: 422 naming the field, before anything else (the code survives).
        for path in ("/v1/auth/register", "/v1/auth/password/reset", "/v1/auth/signin"):
            r = await client.post(path, json={**body, "password": "y" * 129})
            assert r.status_code == 422, (path, r.text)
            assert r.json()["error"] == "invalid_input" and "password" in r.json()["detail"]
        # 73..128 characters: accepted (once a 500).
        r = await client.post("/v1/auth/register", json={**body, "password": LONG})
        assert r.status_code == 200, r.text
        client.cookies.clear()
        r = await client.post("/v1/auth/signin",
                              json={"tenant_id": TENANT, "email": PAT, "password": LONG})
        assert r.status_code == 200, r.text
        client.cookies.clear()

        longest = (LONG + " and one more pale green bicycle")[:128]
        reset = {"tenant_id": TENANT, "email": PAT, "code": await _code(client, sink, "reset")}
        # A weak 128-character one is refused as weak (400), not a 500, and keeps the code.
        r = await client.post("/v1/auth/password/reset", json={**reset, "password": "a" * 128})
        assert r.status_code == 400 and r.json()["error"] == "weak_password", r.text
        r = await client.post("/v1/auth/password/reset", json={**reset, "password": longest})
        assert r.status_code == 200, r.text
        client.cookies.clear()
        r = await client.post("/v1/auth/signin",
                              json={"tenant_id": TENANT, "email": PAT, "password": longest})
        assert r.status_code == 200, r.text
