"""Tenant SMTP selection via the admin API: validation, the SSRF guard at save time, the
password sealed with the keyring and never returned (real FerretDB via the ``ingest`` fixture)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from secmsg.ingest.admin import create_api_key
from secmsg.ingest.tenant_smtp import SECRET_PURPOSE
from secmsg.shared import mongo
from secmsg.shared.errors import IntegrityError
from tests.ingest.conftest import TENANT, Ingest


@pytest.fixture
async def admin_key(ingest: Ingest) -> str:
    return await create_api_key(ingest.db, tenant_id=TENANT, label="console", scopes=("admin",))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def put(ingest: Ingest, key: str, **body: Any) -> httpx.Response:
    return await ingest.client.put("/v1/admin/smtp", json=body, headers=auth(key))


async def stored(ingest: Ingest) -> dict[str, Any] | None:
    doc = await ingest.db[mongo.TENANTS].find_one({"_id": TENANT})
    return doc.get("smtp")


async def test_needs_admin_scope(ingest: Ingest) -> None:
    assert (await ingest.client.get("/v1/admin/smtp")).status_code == 401
    r = await put(ingest, ingest.api_key, mode="own", host="8.8.8.8", port=465, tls="tls")
    assert r.status_code == 403
    assert await stored(ingest) is None


async def test_default_is_platform_and_own_roundtrip(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.get("/v1/admin/smtp", headers=auth(admin_key))
    assert r.status_code == 200 and r.json()["mode"] == "platform"
    assert r.json()["password_set"] is False

    r = await put(ingest, admin_key, mode="own", host="8.8.8.8", port=587, tls="starttls",
                  username="acme", password="s3cret-pw")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "own" and body["host"] == "8.8.8.8" and body["port"] == 587
    assert body["password_set"] is True and "password" not in body
    assert "s3cret-pw" not in r.text

    doc = await stored(ingest)
    assert doc is not None and "s3cret-pw" not in str(doc)
    ring = ingest.settings.key_ring
    assert ring.open_secret(TENANT, SECRET_PURPOSE, doc["password_sealed"]) == "s3cret-pw"
    with pytest.raises(IntegrityError):  # bound to the tenant
        ring.open_secret("other-tenant", SECRET_PURPOSE, doc["password_sealed"])

    r = await ingest.client.get("/v1/admin/smtp", headers=auth(admin_key))
    assert r.json()["password_set"] is True and "s3cret-pw" not in r.text

    # Omitting the password keeps it (same username); switching back to platform clears all.
    r = await put(ingest, admin_key, mode="own", host="8.8.4.4", port=465, tls="tls",
                  username="acme")
    assert r.status_code == 200 and r.json()["password_set"] is True
    assert (await stored(ingest))["password_sealed"] == doc["password_sealed"]
    r = await put(ingest, admin_key, mode="platform")
    assert r.status_code == 200 and r.json()["mode"] == "platform"
    assert (await stored(ingest))["password_sealed"] is None


@pytest.mark.parametrize("body", [
    {"mode": "own", "host": "8.8.8.8", "port": 587},                      # no TLS mode
    {"mode": "own", "host": "8.8.8.8", "port": 587, "tls": "none"},       # plaintext
    {"mode": "own", "host": "8.8.8.8", "port": 0, "tls": "tls"},
    {"mode": "own", "host": "8.8.8.8", "port": 70000, "tls": "tls"},
    {"mode": "own", "port": 587, "tls": "tls"},
    {"mode": "own", "host": "8.8.8.8", "port": 587, "tls": "tls", "username": "u"},  # no pw
    {"mode": "relay"},
])
async def test_invalid_bodies_refused(ingest: Ingest, admin_key: str,
                                      body: dict[str, Any]) -> None:
    r = await ingest.client.put("/v1/admin/smtp", json=body, headers=auth(admin_key))
    assert r.status_code in (400, 422), r.text
    assert await stored(ingest) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "10.0.0.5",
                                  "2130706433", "0x7f000001", "0177.0.0.1", "::ffff:127.0.0.1",
                                  "fd00::1", "no-such-host.invalid"])
async def test_ssrf_hosts_refused_at_save(ingest: Ingest, admin_key: str, host: str) -> None:
    r = await put(ingest, admin_key, mode="own", host=host, port=25, tls="starttls")
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_input" and "SMTP host" in r.json()["detail"]
    assert await stored(ingest) is None


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # An operator setting, read once when the app starts: set it before the app exists.
    monkeypatch.setenv("SECMSG_SMTP_ALLOWED_TARGETS", "127.0.0.0/8")


async def test_allow_list_admits_loopback(loopback_allowed: None, ingest: Ingest,
                                          admin_key: str) -> None:
    r = await put(ingest, admin_key, mode="own", host="127.0.0.1", port=2525, tls="starttls")
    assert r.status_code == 200, r.text
    r = await put(ingest, admin_key, mode="own", host="169.254.169.254", port=25, tls="tls")
    assert r.status_code == 400
    assert (await stored(ingest))["host"] == "127.0.0.1"
