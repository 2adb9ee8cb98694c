"""Helpers for the account tests: tenant policy, codes, other client IPs."""

from __future__ import annotations

from typing import Any

import httpx

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.retrieve.helpers import TENANT, Running, last_code

GOOD_PASSWORD = "plum tractor seventeen lanterns"


async def set_policy(db: Any, **policy: Any) -> None:
    await db[mongo.TENANTS].update_one({"_id": TENANT}, {"$set": {"policy": policy}})


async def fresh_code(app: Running, sink: Sink, email: str, purpose: str = "signin") -> str:
    r = await app.client.post("/v1/auth/code",
                              json={"tenant_id": TENANT, "email": email, "purpose": purpose})
    assert r.status_code == 202, r.text
    return last_code(sink, email)


def client_from(app: Running, ip: str) -> httpx.AsyncClient:
    """Another client of the same app, seen from ``ip``."""
    transport = app.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=transport.app, client=(ip, 4000)),
                             base_url="https://testserver")


async def register(app: Running, sink: Sink, email: str,
                   password: str = GOOD_PASSWORD) -> str:
    code = await fresh_code(app, sink, email, "register")
    r = await app.client.post("/v1/auth/register", json={
        "tenant_id": TENANT, "email": email, "code": code, "password": password})
    assert r.status_code == 200, r.text
    app.client.cookies.clear()
    return str(r.json()["token"])
