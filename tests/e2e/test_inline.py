"""Small objects inline: kept encrypted in the message document, not in S3, and every path a
recipient or sender takes works for them as for S3 objects -- body, download, Range, a key
rotation (re-wrap), a recall (the ciphertext leaves the document). Real processes, real HTTP.
"""

from __future__ import annotations

import os

import pytest

from secmsg.ingest.admin import create_api_key
from secmsg.shared import mongo
from tests.e2e.helpers import Platform, eventually, submit

pytestmark = pytest.mark.timeout(240)


async def test_small_objects_inline_large_ones_in_s3_and_every_path_reads_both(
        platform: Platform) -> None:
    small = b"SMALL-CANARY " + os.urandom(20_000)
    large = os.urandom(200_000)  # over the 64 KiB default: streamed to S3
    text = "Your results are ready. TEXT-CANARY"
    mid = await submit(platform, sender="alice@acme.example", to=["bob@example.org"],
                       subject="inline", text=text,
                       attachments={"small.bin": small, "large.bin": large})
    doc = await eventually(lambda: platform.db[mongo.MESSAGES].find_one({"_id": mid}),
                           timeout=60, what="the message on record")
    by_role = {(o["role"], o.get("filename")): o for o in doc["objects"]}
    text_obj, small_obj = by_role[("text", None)], by_role[("attachment", "small.bin")]
    large_obj = by_role[("attachment", "large.bin")]
    assert set(doc["inline"]) == {text_obj["object_id"], small_obj["object_id"]}
    assert b"SMALL-CANARY" not in doc["inline"][small_obj["object_id"]], "inline is encrypted"
    stored = {p.name for p in platform.s3_data_dir.rglob("*") if p.is_file()}
    assert large_obj["object_id"] in stored
    assert not {text_obj["object_id"], small_obj["object_id"]} & stored, "inline went to S3"

    async with platform.retrieve_client() as web:
        token = await platform.sign_in(web, "bob@example.org")
        auth = {"Authorization": f"Bearer {token}"}
        url = f"/v1/messages/{mid}/attachments/"

        async def reads_everything() -> None:
            r = await web.get(f"/v1/messages/{mid}", headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["text"] == text
            for obj, content in ((small_obj, small), (large_obj, large)):
                d = await web.get(url + obj["object_id"], headers=auth)
                assert d.status_code == 200 and d.content == content
            part = await web.get(url + small_obj["object_id"],
                                 headers={**auth, "Range": "bytes=5-20004"})
            assert part.status_code == 206 and part.content == small[5:20005]
            tail = await web.get(url + small_obj["object_id"],
                                 headers={**auth, "Range": f"bytes={len(small) - 7}-"})
            assert tail.status_code == 206 and tail.content == small[-7:]
            bad = await web.get(url + small_obj["object_id"],
                                headers={**auth, "Range": f"bytes={len(small)}-"})
            assert bad.status_code == 416

        await reads_everything()

        # Key rotation: store re-wraps the data keys of inline objects like the others.
        admin = await create_api_key(platform.db, tenant_id=platform.tenant, label="admin",
                                     scopes=("send", "admin"))
        async with platform.retrieve_client() as http:
            r = await http.post(platform.ingest_url + "/v1/admin/keys/rotate",
                                headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 202, r.text

        before = {o["object_id"]: o["wrapped_key"] for o in doc["objects"]}

        async def rewrapped() -> bool:
            d = await platform.db[mongo.MESSAGES].find_one({"_id": mid})
            return d is not None and all(o["wrapped_key"] != before[o["object_id"]]
                                         for o in d["objects"])

        await eventually(rewrapped, timeout=90, what="data keys re-wrapped")
        await reads_everything()

        # Recall: access ends and the inline ciphertext leaves the document.
        async with platform.retrieve_client() as http:
            r = await http.post(f"{platform.ingest_url}/v1/messages/{mid}/recall",
                                headers={"Authorization": f"Bearer {platform.api_key}"})
        assert r.status_code == 202, r.text
        gone = await web.get(url + small_obj["object_id"], headers=auth)
        assert gone.status_code == 410

        async def purged() -> bool:
            d = await platform.db[mongo.MESSAGES].find_one({"_id": mid})
            return d is not None and d["state"] == "recalled" and "inline" not in d

        await eventually(purged, timeout=60, what="recalled without inline ciphertext")
        assert large_obj["object_id"] not in {p.name for p in platform.s3_data_dir.rglob("*")
                                              if p.is_file()}
