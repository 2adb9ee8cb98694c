"""ASVS 5.0 V7 (session management) and the toolbar device flow, against the real servers."""

from __future__ import annotations

from typing import Any

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.retrieve.accounts_helpers import fresh_code, register, set_policy
from tests.retrieve.helpers import TENANT, Running, Seeder, audit_events, bearer, sign_in

PAT = "pat@example.org"


async def device_token(app: Running, session: str, scopes: list[str]) -> dict[str, Any]:
    r = await app.client.post("/v1/device/authorize", json={
        "tenant_id": TENANT, "client_name": "Outlook on PAT-PC", "scopes": scopes})
    assert r.status_code == 200, r.text
    grant = r.json()
    r = await app.client.post("/v1/device/approve", headers=bearer(session),
                              json={"user_code": grant["user_code"].lower()})
    assert r.status_code == 200, r.text
    r = await app.client.post("/v1/device/token", json={"device_code": grant["device_code"]})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_device_flow_pending_slow_down_approve_single_use(
        app: Running, seeder: Seeder, sink: Sink, settings: Any) -> None:
    await seeder.message()
    session = await sign_in(app.client, sink)
    r = await app.client.post("/v1/device/authorize", json={
        "tenant_id": TENANT, "client_name": "toolbar", "scopes": ["read", "send"]})
    grant = r.json()
    assert grant["verification_uri"].endswith("/device") and grant["interval"] >= 1
    poll = {"device_code": grant["device_code"]}
    r = await app.client.post("/v1/device/token", json=poll)
    assert (r.status_code, r.json()["error"]) == (400, "authorization_pending")
    r = await app.client.post("/v1/device/token", json=poll)
    assert (r.status_code, r.json()["error"]) == (400, "slow_down")
    # A toolbar's token cannot approve devices: that needs the person's session.
    r = await app.client.post("/v1/device/approve", json={"user_code": grant["user_code"]})
    assert r.status_code == 401
    r = await app.client.post("/v1/device/approve", headers=bearer(session),
                              json={"user_code": grant["user_code"]})
    assert r.status_code == 200 and r.json()["scopes"] == ["read", "send"]
    r = await app.client.post("/v1/device/token", json=poll)
    assert r.status_code == 200
    token = r.json()["access_token"]
    assert token.startswith("smt_") and r.json()["scopes"] == ["read", "send"]
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 200
    r = await app.client.post("/v1/device/token", json=poll)  # single use
    assert (r.status_code, r.json()["error"]) == (400, "expired_token")
    r = await app.client.post("/v1/device/approve", headers=bearer(session),
                              json={"user_code": grant["user_code"]})
    assert r.status_code == 404
    assert "token.issued" in [e.get("action") for e in await audit_events(settings)]


async def test_device_flow_denied_and_cross_tenant_code(app: Running, seeder: Seeder,
                                                        sink: Sink) -> None:
    await seeder.message()
    session = await sign_in(app.client, sink)
    r = await app.client.post("/v1/device/authorize", json={
        "tenant_id": "globex", "client_name": "t", "scopes": ["read"]})
    other = r.json()
    # A user code of another tenant's request is unknown here.
    r = await app.client.post("/v1/device/approve", headers=bearer(session),
                              json={"user_code": other["user_code"]})
    assert r.status_code == 404
    r = await app.client.post("/v1/device/authorize", json={
        "tenant_id": TENANT, "client_name": "t", "scopes": ["read"]})
    mine = r.json()
    r = await app.client.post("/v1/device/deny", headers=bearer(session),
                              json={"user_code": mine["user_code"]})
    assert r.status_code == 200
    r = await app.client.post("/v1/device/token", json={"device_code": mine["device_code"]})
    assert (r.status_code, r.json()["error"]) == (400, "access_denied")
    r = await app.client.post("/v1/device/authorize", json={
        "tenant_id": TENANT, "client_name": "t", "scopes": ["admin"]})
    r = await app.client.post("/v1/device/approve", headers=bearer(session),
                              json={"user_code": r.json()["user_code"]})
    assert r.status_code == 403  # admin scope only for tenant admins


async def test_token_list_and_revoke(app: Running, seeder: Seeder, sink: Sink,
                                     mongo_db: Any, settings: Any) -> None:
    await seeder.message()
    session = await sign_in(app.client, sink)
    issued = await device_token(app, session, ["read"])
    r = await app.client.get("/v1/tokens", headers=bearer(session))
    listed = r.json()["tokens"]
    assert [t["token_id"] for t in listed] == [issued["token_id"]] and listed[0]["active"]
    assert issued["access_token"] not in r.text
    # Someone else's token id is a 404, never revoked.
    r = await app.client.delete(f"/v1/tokens/{'0' * 32}", headers=bearer(session))
    assert r.status_code == 404
    r = await app.client.delete(f"/v1/tokens/{issued['token_id']}", headers=bearer(session))
    assert r.status_code == 204
    r = await app.client.get("/v1/messages", headers=bearer(issued["access_token"]))
    assert r.status_code == 401
    r = await app.client.get("/v1/tokens", headers=bearer(session))
    assert r.json()["tokens"][0]["active"] is False
    assert "token.revoked" in [e.get("action") for e in await audit_events(settings)]


async def test_logout_everywhere_kills_sessions_and_tokens(app: Running, seeder: Seeder,
                                                           sink: Sink, settings: Any) -> None:
    await seeder.message()
    one = await sign_in(app.client, sink)
    two = await sign_in(app.client, sink)
    assert one != two  # a new token at every sign-in
    toolbar = (await device_token(app, one, ["read"]))["access_token"]
    r = await app.client.post("/v1/auth/logout-everywhere", headers=bearer(toolbar))
    assert r.status_code == 401  # a toolbar token cannot do this
    r = await app.client.post("/v1/auth/logout-everywhere", headers=bearer(two))
    assert r.status_code == 204
    for dead in (one, two, toolbar):
        assert (await app.client.get("/v1/messages", headers=bearer(dead))).status_code == 401
    again = await sign_in(app.client, sink)
    assert (await app.client.get("/v1/messages", headers=bearer(again))).status_code == 200
    assert "signout.all" in [e.get("action") for e in await audit_events(settings)]


async def test_signed_out_session_cannot_be_reused(app: Running, seeder: Seeder,
                                                   sink: Sink) -> None:
    await seeder.message()
    token = await sign_in(app.client, sink)
    assert (await app.client.post("/v1/auth/logout", headers=bearer(token))).status_code == 204
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 401


async def test_tenant_policy_idle_and_absolute_timeouts(app: Running, seeder: Seeder,
                                                        sink: Sink, mongo_db: Any) -> None:
    await seeder.message(to=[PAT])
    await set_policy(mongo_db, signin="code", session_idle_minutes=5,
                     session_absolute_hours=1)
    token = await register(app, sink, PAT)
    app.shift_clock(4 * 60)
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 200
    app.shift_clock(5 * 60 + 1)  # idle longer than the tenant's 5 minutes
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 401
    r = await app.client.post("/v1/auth/signin", json={
        "tenant_id": TENANT, "email": PAT, "code": await fresh_code(app, sink, PAT)})
    token = r.json()["token"]
    for _ in range(15):  # kept busy, it still ends at the absolute timeout
        app.shift_clock(4 * 60)
        await app.client.get("/v1/messages", headers=bearer(token))
    assert (await app.client.get("/v1/messages", headers=bearer(token))).status_code == 401


async def test_code_mail_uses_the_tenant_template(app: Running, seeder: Seeder, sink: Sink,
                                                  mongo_db: Any, settings: Any) -> None:
    await seeder.message(to=[PAT])
    await mongo_db[mongo.TENANTS].update_one({"_id": TENANT}, {"$set": {
        "footer": "ACME, 1 Main St", "templates": {
            "code_email_text": {"source": "ACME code {{ code }} ({{ purpose }})"},
            "code_email_html": {"source": "<p>{{ broken"}}}})
    code = await fresh_code(app, sink, PAT, "register")
    mail = sink.handler.for_recipient(PAT)[-1].message
    assert mail.get_body(("plain",)).get_content().strip() == f"ACME code {code} (register)"
    html = mail.get_body(("html",)).get_content()
    assert code in html and "ACME, 1 Main St" in html  # broken tenant HTML: the default
    r = await app.client.post("/v1/auth/signin", json={"tenant_id": TENANT, "email": PAT,
                                                        "code": "00000000"})
    assert r.status_code == 401
    events = [e for e in await audit_events(settings) if e.get("action") == "signin.failed"]
    assert events and events[-1]["actor"] == PAT and "00000000" not in str(events)
