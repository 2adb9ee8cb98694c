"""Backup -> wipe -> restore -> read an old message, against the real servers.

The services run as they do on Kubernetes: the keyring only from a file
(``SECMSG_KEYRING_FILE``; the variable they also see is a decoy, different for the run after
the restore, so a read that works proves the file was used). The keyring is backed up by
copying that file, as docs/operations.md ("Backups") says; MongoDB and S3 with
``python -m secmsg.ops.backup`` as a real command.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from secmsg.shared.crypto import KeyRing
from secmsg.shared.settings import CommonSettings
from tests.deploy.conftest import ROOT
from tests.e2e.helpers import Platform, eventually, submit

pytestmark = pytest.mark.timeout(240)


def backup_cli(action: str, target: Path, env: dict[str, str]) -> subprocess.CompletedProcess[
        str]:
    return subprocess.run([sys.executable, "-m", "secmsg.ops.backup", action, str(target)],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def minio(s: CommonSettings) -> Minio:
    return Minio(s.s3_endpoint, access_key=s.s3_access_key, secret_key=s.s3_secret_key,
                 secure=False, region=s.s3_region)


async def test_backup_wipe_restore_then_read_an_old_message(
        services: Callable[..., ServiceProc], mongo_db: Any, sink: Sink, env: dict[str, str],
        settings: CommonSettings, tmp_path: Path) -> None:
    from secmsg.ingest.admin import create_api_key, create_tenant

    keyring_file = tmp_path / "secret" / "keyring"
    keyring_file.parent.mkdir()
    keyring_file.write_text(KeyRing.generate_spec(1) + "\n" + KeyRing.generate_spec(2) + "\n")
    from_file = {"SECMSG_KEYRING_FILE": str(keyring_file),
                 "SECMSG_KEYRING": KeyRing.generate_spec(1)}  # decoy
    procs = {n: services(n, **from_file) for n in ("store", "ingest", "retrieve")}
    await create_tenant(mongo_db, tenant_id="acme", name="Acme")
    key = await create_api_key(mongo_db, tenant_id="acme", label="backup")
    platform = Platform(tenant="acme", api_key=key, db=mongo_db, sink=sink,
                        s3_data_dir=tmp_path, procs=procs, start_service=services)
    attachment = os.urandom(200_000)
    message_id = await submit(platform, sender="alice@acme.example", to=["bob@example.org"],
                              subject="Before the backup", text="Kept across a restore.",
                              attachments={"scan.bin": attachment})
    await eventually(lambda: mongo_db["messages"].find_one({"_id": message_id}), timeout=60,
                     what="the message stored")
    for p in procs.values():
        p.stop()

    # Back up: the keyring (a copy of the Secret's file), then MongoDB and S3.
    backup = tmp_path / "backup"
    keyring_copy = tmp_path / "keyring-offline-copy"
    shutil.copy(keyring_file, keyring_copy)
    done = backup_cli("dump", backup, env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["collections"]["messages"]["count"] == 1
    # The 200 kB attachment is an S3 object; the small body is kept inline (encrypted) in the
    # message document, so it travels with the MongoDB dump.
    assert len(manifest["objects"]) == 1
    stored = await mongo_db["messages"].find_one({"_id": message_id})
    assert stored is not None and len(stored["inline"]) >= 1
    # ciphertext only: neither the attachment's bytes nor the body's text appear in the backup
    for f in (backup / "s3").iterdir():
        assert attachment[1000:1064] not in f.read_bytes()
    for f in (backup / "mongo").iterdir():
        assert b"Kept across a restore." not in f.read_bytes()

    # Wipe everything: database, bucket, keyring.
    await mongo_db.client.drop_database(settings.mongo_db)
    s3 = minio(settings)
    for obj in s3.list_objects(settings.s3_bucket, recursive=True):
        s3.remove_object(settings.s3_bucket, str(obj.object_name))
    s3.remove_bucket(settings.s3_bucket)
    keyring_file.unlink()
    assert await mongo_db["messages"].count_documents({}) == 0

    # Restore: keyring file, then the dump.
    shutil.copy(keyring_copy, keyring_file)
    done = backup_cli("restore", backup, env)
    assert done.returncode == 0, done.stderr
    assert "1 documents" not in done.stdout  # more than the message: tenant, key, delivery...
    assert await mongo_db["messages"].count_documents({"_id": message_id}) == 1

    # Read the old message through retrieve, with a different decoy in the variable.
    procs2 = {n: services(n, SECMSG_KEYRING_FILE=str(keyring_file),
                          SECMSG_KEYRING=KeyRing.generate_spec(1)) for n in ("store", "retrieve")}
    platform.procs = {**procs, **procs2}
    async with platform.retrieve_client() as web:
        token = await platform.sign_in(web, "bob@example.org")
        auth = {"Authorization": f"Bearer {token}"}
        r = await web.get(f"/v1/messages/{message_id}", headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["subject"] == "Before the backup"
        assert "Kept across a restore." in json.dumps(body)
        (att,) = body["attachments"]
        r = await web.get(f"/v1/messages/{message_id}/attachments/{att['object_id']}",
                          headers=auth)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(attachment).digest()


def test_restore_refuses_a_damaged_backup_or_a_target_with_data(
        env: dict[str, str], settings: CommonSettings, tmp_path: Path) -> None:
    s3 = minio(settings)
    if not s3.bucket_exists(settings.s3_bucket):
        s3.make_bucket(settings.s3_bucket)
    s3.put_object(settings.s3_bucket, "t/m/o", io.BytesIO(b"x" * 10), 10)
    backup = tmp_path / "backup"
    assert backup_cli("dump", backup, env).returncode == 0
    assert backup_cli("verify", backup, env).returncode == 0
    # The bucket still holds the object: restoring over it is refused, nothing written.
    refused = backup_cli("restore", backup, env)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    # A damaged file is found before anything is written.
    s3.remove_object(settings.s3_bucket, "t/m/o")
    (obj,) = (backup / "s3").iterdir()
    obj.write_bytes(b"y" * 10)
    refused = backup_cli("restore", backup, env)
    assert refused.returncode == 2 and "damaged" in refused.stderr
    assert next(iter(s3.list_objects(settings.s3_bucket, recursive=True)), None) is None
    # A dump into a directory with files is refused too (never mixes two backups).
    again = backup_cli("dump", backup, env)
    assert again.returncode == 2 and "not empty" in again.stderr
