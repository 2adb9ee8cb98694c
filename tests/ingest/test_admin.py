"""Tenant administration: idempotent tenants, API keys stored only as hashes, the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import pytest

from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.ingest.envelope import sanitize_filename
from secmsg.shared.errors import InvalidInput, NotFound


async def test_create_tenant_is_idempotent_and_updates_policy(mongo_db: Any) -> None:
    doc = await create_tenant(mongo_db, tenant_id="clinic", name="ABC Medical",
                              max_recipients=10, footer="Sent by ABC Medical",
                              disclaimers=["Confidential."])
    assert doc["limits"]["max_recipients"] == 10
    assert doc["limits"]["max_message_bytes"] == 5_000_000_000
    assert doc["default_expiry_days"] == 30
    created = doc["created_at"]
    again = await create_tenant(mongo_db, tenant_id="clinic", name="ABC Medical Group",
                                max_attachments=7)
    assert again["created_at"] == created
    assert again["name"] == "ABC Medical Group"
    assert again["limits"]["max_recipients"] == 10  # kept
    assert again["limits"]["max_attachments"] == 7
    assert again["footer"] == "Sent by ABC Medical"
    assert await mongo_db["tenants"].count_documents({}) == 1
    with pytest.raises(InvalidInput):
        await create_tenant(mongo_db, tenant_id="Bad Id", name="x")
    with pytest.raises(InvalidInput):
        await create_tenant(mongo_db, tenant_id="ok", name="x", max_recipients=0)


async def test_api_key_is_shown_once_and_stored_hashed(mongo_db: Any) -> None:
    await create_tenant(mongo_db, tenant_id="clinic", name="ABC")
    key = await create_api_key(mongo_db, tenant_id="clinic", label="outlook")
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "smk" and len(secret) >= 43  # 32 random bytes, base64url
    doc = await mongo_db["api_keys"].find_one({"key_id": key_id})
    assert doc["_id"] == hashlib.sha256(key.encode()).hexdigest()
    assert doc["tenant_id"] == "clinic" and doc["label"] == "outlook"
    assert doc["revoked_at"] is None
    assert secret not in str(doc)
    with pytest.raises(NotFound):
        await create_api_key(mongo_db, tenant_id="nobody")
    with pytest.raises(InvalidInput):
        await create_api_key(mongo_db, tenant_id="clinic", scopes=("root",))
    with pytest.raises(InvalidInput):
        await create_api_key(mongo_db, tenant_id="clinic", scopes=())


async def test_cli(env: dict[str, str], mongo_db: Any) -> None:
    run_env = {**os.environ, **env}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "secmsg.ingest.admin", *args],
                              env=run_env, capture_output=True, text=True, timeout=60)

    r = cli("create-tenant", "cli-org", "--name", "CLI Org", "--max-recipients", "5",
            "--disclaimer", "One.", "--disclaimer", "Two.")
    assert r.returncode == 0, r.stderr
    doc = await mongo_db["tenants"].find_one({"_id": "cli-org"})
    assert doc["limits"]["max_recipients"] == 5 and doc["disclaimers"] == ["One.", "Two."]
    r = cli("create-api-key", "cli-org", "--label", "ci")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("smk_")
    doc = await mongo_db["api_keys"].find_one({"_id": hashlib.sha256(key.encode()).hexdigest()})
    assert doc is not None and doc["scopes"] == ["send"]
    r = cli("create-api-key", "cli-org", "--label", "console", "--admin")
    assert r.returncode == 0, r.stderr
    doc = await mongo_db["api_keys"].find_one(
        {"_id": hashlib.sha256(r.stdout.strip().encode()).hexdigest()})
    assert doc["scopes"] == ["admin"]
    r = cli("create-api-key", "cli-org", "--admin", "--send")
    doc = await mongo_db["api_keys"].find_one(
        {"_id": hashlib.sha256(r.stdout.strip().encode()).hexdigest()})
    assert doc["scopes"] == ["send", "admin"]
    assert cli("create-api-key", "missing-org").returncode != 0
    r = cli("revoke-api-key", key.split("_")[1])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(("raw", "clean"), [
    (None, "attachment"), ("", "attachment"), ("a/b/c.txt", "c.txt"),
    ("..\\..\\win.ini", "win.ini"), ("tab\there.txt", "tabhere.txt"), ("..", "attachment"),
    ("  spaced.pdf ", "spaced.pdf"), ("bidi\u202etxt.exe", "biditxt.exe"),
])
def test_sanitize_filename(raw: str | None, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_sanitize_filename_limits_bytes_and_refuses_header_breakers() -> None:
    name = sanitize_filename("ü" * 300 + ".docx")
    assert len(name.encode()) <= 255 and name.endswith(".docx")
    for bad in ("a\r.txt", "a\n.txt", "a\x00.txt"):
        with pytest.raises(InvalidInput):
            sanitize_filename(bad)
