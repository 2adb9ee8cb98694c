"""End to end: a message walks ingest → store → notify → retrieve as real processes.

Sender posts over HTTP with the tenant's API key; each recipient's notification lands at the
SMTP sink; the recipient signs in with the emailed code over HTTPS and downloads the bodies and
every attachment byte-identical; the object store's raw files hold no plaintext; every open and
download is recorded by store in the audit trail.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.e2e.helpers import Platform, eventually, submit

pytestmark = pytest.mark.timeout(240)


async def test_message_travels_end_to_end(platform: Platform) -> None:
    secret_text = "The launch code is PLAINTEXT-CANARY-7f3a " * 20
    attachments = {
        "report.pdf": os.urandom(300_000) + b"PLAINTEXT-CANARY-ATTACH" + os.urandom(1000),
        "notes.txt": b"PLAINTEXT-CANARY-NOTES\n" * 5000,
        "empty.bin": b"",
    }
    to, cc = ["bob@example.org", "carol@example.org"], ["dave@example.net"]
    message_id = await submit(platform, sender="alice@acme.example", to=to, cc=cc,
                              subject="Quarterly results (confidential)", text=secret_text,
                              html="<p>PLAINTEXT-CANARY-HTML</p>", attachments=attachments)

    # One notification per recipient, with the sender's subject and the toolbar markers.
    for rcpt in to + cc:
        mails = await eventually(lambda r=rcpt: platform.sink.handler.for_recipient(r),
                                 timeout=60, what=f"notification to {rcpt}")
        assert len(mails) == 1
        msg = mails[0].message
        assert msg["Subject"] == "Quarterly results (confidential)"
        assert msg["X-Secure-Message-Id"] == message_id
        assert msg["X-Secure-Message-Url"].endswith(f"/m/{platform.tenant}/{message_id}")
        raw = mails[0].data
        assert b"PLAINTEXT-CANARY" not in raw, "notification must not carry the content"

    # The object store's raw files never contain plaintext.
    raw_files = [p for p in platform.s3_data_dir.rglob("*") if p.is_file()]
    assert raw_files, "expected encrypted objects on disk"
    for p in raw_files:
        assert b"PLAINTEXT-CANARY" not in p.read_bytes(), f"plaintext found in {p}"

    # Bob signs in with the emailed code and reads everything over HTTPS.
    async with platform.retrieve_client() as web:
        token = await platform.sign_in(web, "bob@example.org")
        auth = {"Authorization": f"Bearer {token}"}
        listing = (await web.get("/v1/messages", headers=auth)).json()
        ids = [m["message_id"] if "message_id" in m else m["id"] for m in listing["messages"]]
        assert message_id in ids

        r = await web.get(f"/v1/messages/{message_id}", headers=auth)
        assert r.status_code == 200
        detail = r.json()
        assert detail["text"] == secret_text
        assert "PLAINTEXT-CANARY-HTML" in detail["html"]
        by_name = {a["filename"]: a for a in detail["attachments"]}
        assert set(by_name) == set(attachments)
        for name, content in attachments.items():
            att = by_name[name]
            d = await web.get(f"/v1/messages/{message_id}/attachments/{att['object_id']}",
                              headers=auth)
            assert d.status_code == 200
            assert d.content == content, name
            assert int(d.headers["content-length"]) == len(content)
            assert "attachment" in d.headers["content-disposition"]
            assert hashlib.sha256(d.content).hexdigest() == hashlib.sha256(content).hexdigest()
        # A range across a segment boundary.
        att = by_name["report.pdf"]
        part = await web.get(f"/v1/messages/{message_id}/attachments/{att['object_id']}",
                             headers={**auth, "Range": "bytes=65530-65545"})
        assert part.status_code == 206
        assert part.content == attachments["report.pdf"][65530:65546]

        # Carol may not read Bob's session; an outsider sees 404 for the message.
        outsider = await platform.sign_in(web, "mallory@evil.example", expect_code=False)
        assert outsider is None
    # Store recorded the open and the downloads in the audit trail.
    audit = await eventually(
        lambda: platform.count("audit_events", {"message_id": message_id}, at_least=5),
        timeout=30, what="audit events recorded by store")
    assert audit >= 5


async def test_other_recipient_and_other_tenant_get_404(platform: Platform) -> None:
    mid = await submit(platform, sender="alice@acme.example", to=["erin@example.org"],
                       subject="For Erin only", text="erin's secret")
    await eventually(lambda: platform.sink.handler.for_recipient("erin@example.org"),
                     timeout=60, what="notification to erin")
    other_tenant = await platform.add_tenant("other-org")
    mid_other = await submit(platform, sender="x@other.example", to=["frank@example.org"],
                             subject="other tenant", text="other secret", api_key=other_tenant)
    await eventually(lambda: platform.sink.handler.for_recipient("frank@example.org"),
                     timeout=60, what="notification to frank")
    async with platform.retrieve_client() as web:
        token = await platform.sign_in(web, "frank@example.org", tenant="other-org")
        auth = {"Authorization": f"Bearer {token}"}
        assert (await web.get(f"/v1/messages/{mid_other}", headers=auth)).status_code == 200
        # Erin's message (other recipient, other tenant) and a random id look the same: 404.
        r1 = await web.get(f"/v1/messages/{mid}", headers=auth)
        r2 = await web.get(f"/v1/messages/{'0' * 32}", headers=auth)
        assert r1.status_code == r2.status_code == 404
        assert r1.json() == r2.json()
