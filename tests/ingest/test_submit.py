"""Happy path against the real servers: content lands encrypted, the event describes it."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime, timedelta

from secmsg.shared.crypto import decrypt_all
from tests.ingest.conftest import TENANT, Ingest, att, env_part, envelope

CANARY = b"PLAINTEXT-CANARY-91c2"


async def test_message_with_attachments_is_stored_encrypted_and_announced(ingest: Ingest
                                                                         ) -> None:
    files = {
        "report.pdf": os.urandom(5000) + CANARY + os.urandom(3000),  # several segments
        "notes.txt": CANARY * 100,
        "empty.bin": b"",
        "résumé ünïcode.txt": b"exactly-one-segment".ljust(1024, b"."),
    }
    text, html = "text " + CANARY.decode(), "<p>" + CANARY.decode() + "</p>"
    parts = [env_part(envelope(to=["Bob@Example.org", "carol@example.org"],
                               cc=["dave@example.net", "bob@example.org"], text=text, html=html,
                               subject="Quarterly results", disclaimer="Confidential."))]
    parts += [att(name, data, "application/pdf" if name.endswith(".pdf") else "text/plain")
              for name, data in files.items()]
    r = await ingest.post(parts)
    assert r.status_code == 202, r.text
    message_id = r.json()["message_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", message_id)

    events = await ingest.events()
    assert len(events) == 1
    ev = events[0]
    assert (ev.tenant_id, ev.message_id) == (TENANT, message_id)
    assert ev.sender == "alice@acme.example"
    assert ev.subject == "Quarterly results"
    assert ev.disclaimer == "Confidential."
    assert [(x.address, x.kind) for x in ev.recipients] == [
        ("Bob@Example.org", "to"), ("carol@example.org", "to"), ("dave@example.net", "cc")]
    assert ev.submitted_by.startswith("api_key:")
    assert ev.expires_at is not None
    assert abs(ev.expires_at - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    assert [o.role for o in ev.objects] == ["text", "html"] + ["attachment"] * len(files)

    expected = {"text": text.encode(), "html": html.encode(), **files}
    keys = set(await ingest.keys())
    assert keys == {o.key for o in ev.objects}
    ring = ingest.settings.key_ring
    for obj in ev.objects:
        assert obj.key == f"t/{TENANT}/m/{message_id}/{obj.object_id}"
        plain = expected[obj.filename if obj.role == "attachment" else obj.role]
        assert obj.size == len(plain)
        assert obj.sha256 == hashlib.sha256(plain).hexdigest()
        assert obj.segment_size == 1024
        stored = await ingest.blobs.get_bytes(obj.key)
        assert stored != plain
        dek = ring.unwrap(TENANT, obj.object_id, obj.wrapped_key)
        assert decrypt_all(dek, obj.object_id, stored, obj.size, obj.segment_size) == plain
    by_name = {o.filename: o for o in ev.objects if o.role == "attachment"}
    assert by_name["report.pdf"].content_type == "application/pdf"
    assert ev.objects[0].content_type.startswith("text/plain")
    assert ev.objects[1].content_type.startswith("text/html")

    raw_files = [p for p in ingest.s3_dir.rglob("*") if p.is_file()]
    assert len(raw_files) >= len(ev.objects)
    for p in raw_files:
        assert CANARY not in p.read_bytes(), f"plaintext at rest in {p}"


async def test_expiry_options(ingest: Ingest) -> None:
    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    r1 = await ingest.post([env_part(envelope(expires_at=at.isoformat()))])
    r2 = await ingest.post([env_part(envelope(expires_in_days=2))])
    assert r1.status_code == r2.status_code == 202, (r1.text, r2.text)
    evs = {e.message_id: e for e in await ingest.events()}
    assert evs[r1.json()["message_id"]].expires_at == at
    got = evs[r2.json()["message_id"]].expires_at
    assert got is not None
    assert abs(got - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=5)


async def test_html_only_body_and_no_attachments(ingest: Ingest) -> None:
    r = await ingest.post([env_part(envelope(text=None, html="<b>hi</b>"))])
    assert r.status_code == 202, r.text
    (ev,) = await ingest.events()
    assert [o.role for o in ev.objects] == ["html"]
