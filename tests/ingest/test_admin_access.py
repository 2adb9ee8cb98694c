"""Admin API for access: API keys, tenant users, user tokens, policy -- each change audited,
tenant-scoped, refused without the admin scope."""

from __future__ import annotations

from typing import Any

import pytest

from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.shared import mongo
from tests.ingest.access_helpers import add_user, audits, auth, make_token
from tests.ingest.conftest import TENANT, Ingest


@pytest.fixture
async def admin_key(ingest: Ingest) -> str:
    return await create_api_key(ingest.db, tenant_id=TENANT, label="console", scopes=("admin",))


async def test_api_keys_lifecycle(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.post("/v1/admin/api-keys", json={"label": "crm", "scopes": ["send"]},
                                 headers=auth(admin_key))
    assert r.status_code == 201, r.text
    created = r.json()
    key, key_id = created["key"], created["key_id"]
    assert key.startswith(f"smk_{key_id}_") and created["scopes"] == ["send"]

    r = await ingest.client.get("/v1/admin/api-keys", headers=auth(admin_key))
    listed = {k["key_id"]: k for k in r.json()["keys"]}
    assert listed[key_id]["label"] == "crm" and len(listed) == 3
    assert key.split("_", 2)[2] not in r.text and "_id" not in r.text.replace("key_id", "")

    # The new key works until revoked.
    assert (await ingest.client.get("/v1/admin/smtp", headers=auth(key))).status_code == 403
    r = await ingest.client.delete(f"/v1/admin/api-keys/{key_id}", headers=auth(admin_key))
    assert r.status_code == 204
    assert (await ingest.client.get("/v1/admin/smtp", headers=auth(key))).status_code == 401
    r = await ingest.client.delete(f"/v1/admin/api-keys/{key_id}", headers=auth(admin_key))
    assert r.status_code == 204
    assert len(await audits(ingest.settings, "apikey.revoked")) == 1
    created_ev = await audits(ingest.settings, "apikey.created")
    assert created_ev[0].actor == "key:" + admin_key.split("_")[1]
    assert key.split("_", 2)[2] not in str(created_ev[0].detail)

    r = await ingest.client.post("/v1/admin/api-keys", json={"label": "x", "scopes": ["root"]},
                                 headers=auth(admin_key))
    assert r.status_code == 422
    r = await ingest.client.post("/v1/admin/api-keys", json={"label": "x", "scopes": ["send"]},
                                 headers=auth(ingest.api_key))
    assert r.status_code == 403

    # Another tenant's key is not found; a key may revoke itself.
    await create_tenant(ingest.db, tenant_id="other", name="Other")
    foreign = await create_api_key(ingest.db, tenant_id="other", scopes=("admin",))
    r = await ingest.client.delete(f"/v1/admin/api-keys/{foreign.split('_')[1]}",
                                   headers=auth(admin_key))
    assert r.status_code == 404
    r = await ingest.client.delete(f"/v1/admin/api-keys/{admin_key.split('_')[1]}",
                                   headers=auth(admin_key))
    assert r.status_code == 204
    assert (await ingest.client.get("/v1/admin/api-keys",
                                    headers=auth(admin_key))).status_code == 401


async def test_users(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.put("/v1/admin/users/Alice@acme.example", json={"role": "admin"},
                                headers=auth(admin_key))
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = await ingest.client.put("/v1/admin/users/bob@acme.example", json={"role": "sender"},
                                headers=auth(admin_key))
    r = await ingest.client.get("/v1/admin/users", headers=auth(admin_key))
    assert [(u["email"], u["role"]) for u in r.json()["users"]] == [
        ("Alice@acme.example", "admin"), ("bob@acme.example", "sender")]
    r = await ingest.client.put("/v1/admin/users/not-an-email", json={"role": "admin"},
                                headers=auth(admin_key))
    assert r.status_code == 400
    r = await ingest.client.put("/v1/admin/users/c@acme.example", json={"role": "root"},
                                headers=auth(admin_key))
    assert r.status_code == 422

    # Alice administers through her token but cannot demote or remove herself.
    token, _ = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                scopes=["admin"])
    r = await ingest.client.put("/v1/admin/users/alice@acme.example", json={"role": "sender"},
                                headers=auth(token))
    assert r.status_code == 409
    r = await ingest.client.delete("/v1/admin/users/bob@acme.example", headers=auth(token))
    assert r.status_code == 204
    r = await ingest.client.delete("/v1/admin/users/bob@acme.example", headers=auth(token))
    assert r.status_code == 404
    changed = await audits(ingest.settings, "user.changed")
    assert [(e.subject_address, e.detail["role"], e.actor) for e in changed][-1] == (
        "bob@acme.example", "none", "alice@acme.example")


async def test_tokens_listed_and_revoked(ingest: Ingest, admin_key: str) -> None:
    await add_user(ingest.db, tenant=TENANT, email="alice@acme.example", role="sender")
    token, token_id = await make_token(ingest.db, tenant=TENANT, email="alice@acme.example",
                                       scopes=["send"])
    await create_tenant(ingest.db, tenant_id="other", name="Other")
    _, foreign_id = await make_token(ingest.db, tenant="other", email="x@example.org",
                                     scopes=["read"])
    r = await ingest.client.get("/v1/admin/tokens", headers=auth(admin_key))
    assert [t["token_id"] for t in r.json()["tokens"]] == [token_id]
    assert token.split("_", 2)[2] not in r.text
    r = await ingest.client.delete(f"/v1/admin/tokens/{foreign_id}", headers=auth(admin_key))
    assert r.status_code == 404
    r = await ingest.client.delete(f"/v1/admin/tokens/{token_id}", headers=auth(admin_key))
    assert r.status_code == 204
    # retrieve owns ``tokens``: the admin's revocation is ingest's own insert-only entry.
    doc = await ingest.db[mongo.TOKENS].find_one({"token_id": token_id})
    assert doc["revoked_at"] is None
    rev = await ingest.db[mongo.REVOCATIONS].find_one({"_id": f"token:{token_id}"})
    assert rev["kind"] == "token" and rev["tenant_id"] == TENANT and rev["revoked_by"]
    r = await ingest.client.get("/v1/admin/tokens", headers=auth(admin_key))
    assert r.json()["tokens"][0]["revoked_at"] is not None
    ev = await audits(ingest.settings, "token.revoked")
    assert ev[0].subject_address == "alice@acme.example"
    r = await ingest.client.delete(f"/v1/admin/tokens/{token_id}", headers=auth(admin_key))
    assert r.status_code == 204  # repeating changes nothing and is not audited again
    assert len(await audits(ingest.settings, "token.revoked")) == 1
    r = await ingest.client.post("/v1/messages/" + "0" * 32 + "/recall", headers=auth(token))
    assert r.status_code == 401


async def policy(ingest: Ingest, key: str, body: Any) -> Any:
    return await ingest.client.put("/v1/admin/policy", json=body, headers=auth(key))


async def test_policy(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.get("/v1/admin/policy", headers=auth(admin_key))
    assert r.status_code == 200
    assert r.json()["signin"] == "code" and r.json()["limits"]["max_recipients"] == 3

    r = await policy(ingest, admin_key, {"signin": "password+code", "session_idle_minutes": 15,
                                         "retention_days": 90, "default_expiry_days": 0,
                                         "limits": {"max_recipients": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["signin"] == "password+code" and body["session_idle_minutes"] == 15
    assert body["default_expiry_days"] is None and body["limits"]["max_recipients"] == 2
    doc = await ingest.db[mongo.TENANTS].find_one({"_id": TENANT})
    assert doc["policy"] == {"signin": "password+code", "allow_totp": True,
                             "allow_passkeys": True, "session_idle_minutes": 15,
                             "session_absolute_hours": 12, "retention_days": 90}
    ev = await audits(ingest.settings, "policy.changed")
    assert ev[0].detail["fields"] == ("default_expiry_days,max_recipients,retention_days,"
                                      "session_idle_minutes,signin")

    for bad in ({"signin": "magic"}, {"session_idle_minutes": 1},
                {"limits": {"max_recipients": 101}}, {"session_absolute_hours": 1,
                                                      "session_idle_minutes": 61},
                {}, {"signin": None}, {"unknown": 1}, [1]):
        r = await policy(ingest, admin_key, bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"] == "invalid_input"
    assert len(await audits(ingest.settings, "policy.changed")) == 1
    r = await policy(ingest, ingest.api_key, {"signin": "code"})
    assert r.status_code == 403
