"""The toolbar API on retrieve (in-process): detect, the whole message as RFC 5322, ack."""

from __future__ import annotations

import email
import hashlib
import os
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any
from urllib.parse import urlsplit

from secmsg.retrieve import tokens
from secmsg.shared import mongo
from secmsg.shared.settings import CommonSettings
from tests.retrieve.helpers import (
    ALICE,
    BOB,
    OTHER_TENANT,
    TENANT,
    Running,
    Seeder,
    audit_events,
    bearer,
)


async def read_token(app: Running, email_addr: str = "bob@example.org",
                     tenant: str = TENANT) -> str:
    d = app.deps
    issued = await tokens.issue_token(tokens=d.tokens, accounts=d.accounts, audit=d.audit,
                                      tenant_id=tenant, email=email_addr, scopes=["read"],
                                      client="toolbar", now=d.clock())
    return issued.token


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_detect_by_id_url_and_raw_headers_or_body_markers(app: Running,
                                                                seeder: Seeder) -> None:
    msg = await seeder.message()
    h = bearer(await read_token(app))
    mid = msg.message_id
    url = f"https://secure.example/m/{TENANT}/{mid}"
    for body in ({"message_id": mid}, {"url": url},
                 {"raw": f"Subject: x\r\nX-Secure-Message-Id: {mid}\r\n"
                         f"X-Secure-Message-Url: {url}\r\n\r\nhello\r\n"},
                 # headers stripped by a client: the body markers still tell
                 {"raw": f"Subject: x\r\n\r\nRead it.\r\nSecure-Message-Id: {mid}\r\n"
                         f"Secure-Message-Url: {url}\r\n"}):
        r = await app.client.post("/v1/toolbar/detect", json=body, headers=h)
        assert r.status_code == 200, (body, r.text)
        out = r.json()
        assert out["message_id"] == mid and out["tenant_id"] == TENANT
        assert out["available"] is True
        assert out["url"] == f"{app.deps.public_url.rstrip('/')}/m/{TENANT}/{mid}"

    r = await app.client.post("/v1/toolbar/detect", json={"raw": "Subject: hi\r\n\r\nplain\r\n"},
                              headers=h)
    assert r.status_code == 404
    r = await app.client.post("/v1/toolbar/detect", json={"message_id": mid, "url": url},
                              headers=h)
    assert r.status_code == 400
    r = await app.client.post("/v1/toolbar/detect", json={"message_id": mid})
    assert r.status_code == 401


async def test_someone_elses_message_is_unavailable_and_404(app: Running,
                                                             seeder: Seeder) -> None:
    theirs = await seeder.message(to=[ALICE])
    other_tenant = await seeder.message(tenant_id=OTHER_TENANT)
    h = bearer(await read_token(app))
    for mid, tenant in ((theirs.message_id, TENANT), (other_tenant.message_id, OTHER_TENANT)):
        r = await app.client.post("/v1/toolbar/detect",
                                  json={"url": f"https://x.example/m/{tenant}/{mid}"},
                                  headers=h)
        assert r.status_code == 200 and r.json()["available"] is False
        for method, path in (("GET", f"/v1/toolbar/messages/{mid}/original"),
                             ("POST", f"/v1/toolbar/messages/{mid}/ack")):
            r = await app.client.request(method, path, headers=h)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"] == "not_found"


async def test_built_message_round_trips_with_attachments_intact(
        app: Running, seeder: Seeder, settings: CommonSettings) -> None:
    big = os.urandom(5000)  # several 1 KiB segments, not a multiple of 57 or of the segment
    empty = b""
    msg = await seeder.message(
        to=[BOB, "carol@example.org"], subject="Lab results \u00e9",
        text="Hello Bob, zanzibarquokka", html="<p>Hello <b>Bob</b></p>",
        attachments=[("scan.pdf", "application/pdf", big), ("empty.txt", "text/plain", empty),
                     ("r\u00e9sum\u00e9.bin", "application/octet-stream", b"x" * 57)])
    # a bcc recipient, as store records them: notified, never listed
    await seeder.db["messages"].update_one(
        {"_id": msg.message_id},
        {"$push": {"recipients": {"address": "hidden@example.org", "kind": "bcc"}},
         "$addToSet": {"recipient_addresses": "hidden@example.org"}})
    r = await app.client.get(f"/v1/toolbar/messages/{msg.message_id}/original",
                             headers=bearer(await read_token(app)))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("message/rfc822")
    raw = r.content
    host = urlsplit(app.deps.public_url).hostname or ""
    assert raw.startswith(f"X-Secure-Message-Retrieved: {host}; id=".encode() +
                          msg.message_id.encode() + b"; ")
    assert b"hidden@example.org" not in raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = parse(raw)
    assert parsed["From"] == "doctor@acme.example"
    assert parsed["To"] == f"{BOB}, carol@example.org"
    assert parsed["Subject"] == "Lab results \u00e9"
    assert parsed["Message-ID"] == f"<{msg.message_id}@{TENANT}.secmsg>"
    assert parsed["Date"].datetime.timestamp() == int(msg.doc["received_at"].timestamp())
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and plain.get_content() == "Hello Bob, zanzibarquokka"
    assert html is not None and html.get_content() == "<p>Hello <b>Bob</b></p>"
    got = {p.get_filename(): p.get_payload(decode=True) for p in parsed.iter_attachments()}
    assert got == {"scan.pdf": big, "empty.txt": empty,
                   "r\u00e9sum\u00e9.bin": b"x" * 57}
    assert hashlib.sha256(got["scan.pdf"]).digest() == hashlib.sha256(big).digest()

    kinds = [(e.get("action"), e.get("message_id")) for e in await audit_events(settings)
             if e.get("kind") == "audit.recorded"]
    assert ("message.fetched", msg.message_id) in kinds


async def test_original_of_an_rfc822_submission_is_returned_byte_for_byte(
        app: Running, seeder: Seeder, settings: CommonSettings) -> None:
    original = (b"From: Doctor <doctor@acme.example>\r\nTo: bob@example.org\r\n"
                b"Subject: Scan\r\nMessage-ID: <abc@acme.example>\r\n"
                b"X-Secure-Message-Id: 00000000000000000000000000000000\r\n"
                b"Date: Tue, 01 Jan 2030 10:00:00 +0000\r\n\r\nThe body " * 1 + b"x" * 3000
                + b"\r\n")
    msg = await seeder.message(text="The body", html=None,
                               attachments=[("original", "message/rfc822", original)])
    # the seeder writes attachments; make that one the ``original`` object, as ingest does
    objs = msg.doc["objects"]
    for o in objs:
        if o["content_type"] == "message/rfc822":
            o["role"], o["filename"] = "original", None
    await seeder.db["messages"].update_one({"_id": msg.message_id},
                                           {"$set": {"objects": objs, "attachment_count": 0}})
    r = await app.client.get(f"/v1/toolbar/messages/{msg.message_id}/original",
                             headers=bearer(await read_token(app)))
    assert r.status_code == 200, r.text
    head, _, rest = r.content.partition(b"\r\n")
    host = urlsplit(app.deps.public_url).hostname or ""
    assert head.startswith(f"X-Secure-Message-Retrieved: {host}; id=".encode() +
                           msg.message_id.encode())
    # the sender's spoofed marker is gone, every other byte is the original's
    assert rest == original.replace(
        b"X-Secure-Message-Id: 00000000000000000000000000000000\r\n", b"")


async def test_ack_is_audited_and_scope_is_enforced(app: Running, seeder: Seeder,
                                                    settings: CommonSettings,
                                                    mongo_db: Any) -> None:
    msg = await seeder.message()
    r = await app.client.post(f"/v1/toolbar/messages/{msg.message_id}/ack",
                              headers=bearer(await read_token(app)))
    assert r.status_code == 200, r.text
    assert r.json() == {"message_id": msg.message_id, "status": "acknowledged"}
    acks = [e for e in await audit_events(settings)
            if e.get("action") == "message.acknowledged"]
    assert len(acks) == 1
    assert acks[0]["actor"] == "bob@example.org" and acks[0]["message_id"] == msg.message_id

    d = app.deps
    send_only = await tokens.issue_token(tokens=d.tokens, accounts=d.accounts, audit=d.audit,
                                         tenant_id=TENANT, email="bob@example.org",
                                         scopes=["send"], client="toolbar", now=d.clock())
    r = await app.client.post(f"/v1/toolbar/messages/{msg.message_id}/ack",
                              headers=bearer(send_only.token))
    assert r.status_code == 403



async def test_revoked_message_is_gone_for_its_recipient(app: Running, seeder: Seeder,
                                                         mongo_db: Any) -> None:
    msg = await seeder.message()
    await mongo_db[mongo.REVOCATIONS].insert_one({
        "_id": f"{msg.message_id}:bob@example.org", "tenant_id": TENANT,
        "message_id": msg.message_id, "recipient": "bob@example.org", "kind": "revoked",
        "at": datetime.now(UTC), "by": "doctor@acme.example"})
    h = bearer(await read_token(app))
    r = await app.client.get(f"/v1/toolbar/messages/{msg.message_id}/original", headers=h)
    assert r.status_code == 410 and r.json()["error"] == "revoked"
    r = await app.client.post("/v1/toolbar/detect", json={"message_id": msg.message_id},
                              headers=h)
    assert r.status_code == 200 and r.json()["available"] is False
