"""POST /v1/messages/rfc822: a corpus of real-world-shaped messages in, the placeholder out.

The corpus is built here: raw byte templates (Outlook-, Apple Mail-shaped, replies, malformed
ones) and ``email.message.EmailMessage`` (Gmail-shaped). For each good one: every original
header line is in the placeholder byte for byte (but the MIME ones we replace), the old body
and attachments are gone, the markers are there, and the stored objects decrypt to the bodies,
attachments and the original message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy

import pytest

from secmsg.shared.crypto import decrypt_all
from tests.ingest.conftest import TENANT, Ingest

REPLACED = {"content-type", "content-transfer-encoding", "mime-version"}
WINMAIL = b"\x78\x9f\x3e\x22" + b"TNEF-blob-" * 50
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + b"secret-attachment-content " * 40


async def post(ingest: Ingest, raw: bytes, ctype: str = "message/rfc822"):
    return await ingest.client.post(
        "/v1/messages/rfc822", content=raw,
        headers={"Authorization": f"Bearer {ingest.api_key}", "Content-Type": ctype})


def header_fields(raw: bytes) -> list[bytes]:
    """The raw header fields of ``raw`` (continuation lines joined, line ends kept)."""
    m = re.search(rb"\r?\n\r?\n", raw)
    assert m is not None
    fields: list[bytes] = []
    for line in raw[:m.start() + 1].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def outlook() -> bytes:
    return (
        b"Received: from EX01.corp.example (10.0.0.5) by EX02.corp.example (10.0.0.6)\r\n"
        b" with Microsoft SMTP Server id 15.2.1118.40; Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        b"From: \"Doe, Jane\" <jane.doe@acme.example>\r\n"
        b"To: Bob Example <bob@example.org>\r\n"
        b"Cc: carol@example.org\r\n"
        b"Subject: Q3 figures (confidential)\r\n"
        b"Thread-Topic: Q3 figures (confidential)\r\n"
        b"Thread-Index: AdZb3Hk9LmKqYw2RTeOB6u7G1c3F0A==\r\n"
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>\r\n"
        b"Accept-Language: en-GB, en-US\r\n"
        b"Content-Language: en-GB\r\n"
        b"X-MS-Has-Attach: yes\r\n"
        b"X-MS-TNEF-Correlator: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod>\r\n"
        b"X-MS-Exchange-Organization-SCL: -1\r\n"
        b"Content-Type: multipart/mixed;\r\n"
        b"\tboundary=\"_004_AM0PR01MB1234_\"\r\n"
        b"MIME-Version: 1.0\r\n"
        b"\r\n"
        b"--_004_AM0PR01MB1234_\r\n"
        b"Content-Type: multipart/alternative;\r\n\tboundary=\"_000_AM0PR01MB1234_\"\r\n\r\n"
        b"--_000_AM0PR01MB1234_\r\n"
        b"Content-Type: text/plain; charset=\"iso-8859-1\"\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Hi Bob,=0D=0Athe figures are attached. Gr=FC=DFe, Jane\r\n\r\n"
        b"--_000_AM0PR01MB1234_\r\n"
        b"Content-Type: text/html; charset=\"iso-8859-1\"\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<html><body><p>Hi Bob, the figures are attached. Gr=FC=DFe</p></body></html>\r\n\r\n"
        b"--_000_AM0PR01MB1234_--\r\n\r\n"
        b"--_004_AM0PR01MB1234_\r\n"
        b"Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\n"
        b"Content-Disposition: attachment; filename=\"winmail.dat\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(WINMAIL).replace(b"\n", b"\r\n") +
        b"\r\n--_004_AM0PR01MB1234_--\r\n")


def gmail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Zoë Müller <zoe@acme.example>"
    msg["To"] = "bob@example.org, Dave <dave@example.net>"
    msg["Subject"] = "Befund für Sie \u2013 vertraulich"
    msg["Date"] = "Mon, 30 Nov 2026 11:00:00 +0100"
    msg["Message-ID"] = "<CAF=abc123+xyz@mail.gmail.com>"
    msg["X-Gm-Message-State"] = "AOJu0YwExample"
    msg.set_content("Hallo Bob,\nanbei der Befund.\n")
    msg.add_alternative("<div dir=\"ltr\">Hallo Bob, anbei der Befund.</div>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="Befund Müller.pdf")
    raw = msg.as_bytes()
    assert b"=?utf-8?" in raw.lower()  # RFC 2047 subject
    return raw


def apple() -> bytes:
    return (
        b"From: Ann <ann@acme.example>\n"
        b"Content-Type: multipart/related;\n"
        b"\ttype=\"text/html\";\n"
        b"\tboundary=\"Apple-Mail=_1F2E3D4C\"\n"
        b"Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))\n"
        b"Subject: Photo\n"
        b"Date: Mon, 30 Nov 2026 12:00:00 +0100\n"
        b"Message-Id: <5E6F7A8B-1234@acme.example>\n"
        b"To: bob@example.org\n"
        b"X-Mailer: Apple Mail (2.3774.600.62)\n"
        b"\n"
        b"--Apple-Mail=_1F2E3D4C\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"Content-Type: text/html;\n\tcharset=utf-8\n\n"
        b"<html><body>Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe <img src=\"cid:img1@acme\"></body></html>\n"
        b"--Apple-Mail=_1F2E3D4C\n"
        b"Content-Transfer-Encoding: base64\n"
        b"Content-Disposition: inline;\n\tfilename=\"photo.png\"\n"
        b"Content-Type: image/png;\n\tname=\"photo.png\"\n"
        b"Content-Id: <img1@acme>\n\n"
        + base64.encodebytes(PNG) +
        b"\n--Apple-Mail=_1F2E3D4C--\n")


def reply_with_bcc() -> bytes:
    refs = b" ".join(f"<msg{i:03d}.thread@acme.example>".encode() for i in range(12))
    folded = re.sub(rb"(.{60,}?) ", rb"\1\r\n ", refs)
    return (
        b"From: alice@acme.example\r\n"
        b"To: bob@example.org\r\n"
        b"Bcc: secret@example.org\r\n"
        b"Subject: Re: Re: thread\r\n"
        b"Date: Mon, 30 Nov 2026 13:00:00 +0000\r\n"
        b"Message-ID: <reply.42@acme.example>\r\n"
        b"In-Reply-To: <msg011.thread@acme.example>\r\n"
        b"References: " + folded + b"\r\n"
        b"X-Custom: kept as is  (two spaces)\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"plain 8bit reply \xe2\x82\xac body\r\n")


async def stored_objects(ingest: Ingest) -> dict[str, list[tuple[str | None, bytes]]]:
    events = await ingest.events()
    assert len(events) == 1
    ring = ingest.settings.key_ring
    out: dict[str, list[tuple[str | None, bytes]]] = {}
    for obj in events[0].objects:
        dek = ring.unwrap(TENANT, obj.object_id, obj.wrapped_key)
        data = decrypt_all(dek, obj.object_id, await ingest.blobs.get_bytes(obj.key), obj.size,
                           obj.segment_size)
        out.setdefault(obj.role, []).append((obj.filename, data))
    return out


def check_placeholder(raw: bytes, placeholder: bytes, message_id: str,
                      secrets: list[bytes]) -> None:
    head, sep, _ = placeholder.partition(b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n")
    assert sep
    for f in header_fields(raw):
        name = f.split(b":", 1)[0].decode().lower()
        if name in REPLACED:
            continue
        assert f in head + (b"\r\n" if b"\r\n" in raw else b"\n"), f
    out = BytesParser(policy=default_policy).parsebytes(placeholder)
    assert out["X-Secure-Message-Id"] == message_id
    url = out["X-Secure-Message-Url"]
    assert url.endswith(f"/m/{TENANT}/{message_id}")
    assert out.get_content_type() == "multipart/alternative"
    assert len(out.get_all("Content-Type")) == 1
    text = out.get_body(("plain",)).get_content()
    html = out.get_body(("html",)).get_content()
    assert f"Secure-Message-Id: {message_id}" in text and f"Secure-Message-Url: {url}" in text
    assert f'<meta name="secure-message-id" content="{message_id}">' in html
    assert f'data-secure-message-url="{url}"' in html
    assert list(out.iter_attachments()) == []
    for s in secrets:
        assert s not in placeholder


@pytest.mark.parametrize("build", [outlook, gmail, apple, reply_with_bcc])
async def test_corpus_is_stored_and_answered_with_a_placeholder(ingest: Ingest,
                                                               build: Callable[[], bytes]
                                                               ) -> None:
    raw = build()
    r = await post(ingest, raw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("message/rfc822")
    message_id = r.headers["x-secure-message-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", message_id)
    stored = await stored_objects(ingest)
    assert stored["original"] == [(None, raw)]
    ev = (await ingest.events())[0]
    assert ev.message_id == message_id
    assert ev.notify is False  # the organisation's server delivers the placeholder

    if build is outlook:
        assert "Gr\u00fc\u00dfe" in stored["text"][0][1].decode()
        assert b"<html>" in stored["html"][0][1]
        assert stored["attachment"] == [("winmail.dat", WINMAIL)]
        assert ev.sender == "jane.doe@acme.example"
        assert [(x.address, x.kind) for x in ev.recipients] == [
            ("bob@example.org", "to"), ("carol@example.org", "cc")]
        secrets = [b"figures are attached", base64.encodebytes(WINMAIL)[:40]]
    elif build is gmail:
        assert ev.subject == "Befund für Sie \u2013 vertraulich"
        assert stored["text"][0][1] == b"Hallo Bob,\nanbei der Befund.\n"
        assert stored["attachment"] == [("Befund Müller.pdf", PDF)]
        assert [x.address for x in ev.recipients] == ["bob@example.org", "dave@example.net"]
        secrets = [b"anbei der Befund", base64.encodebytes(PDF)[:40]]
    elif build is apple:
        assert "Schöne Grüße" in stored["html"][0][1].decode()
        assert stored["attachment"] == [("photo.png", PNG)]
        secrets = [b"Sch\xc3\xb6ne", base64.encodebytes(PNG)[:40]]
    else:
        assert stored["text"][0][1].decode().rstrip() == "plain 8bit reply \u20ac body"
        assert "secret@example.org" in [x.address for x in ev.recipients]
        secrets = [b"8bit reply"]
    check_placeholder(raw, r.content, message_id, secrets)


async def test_placeholder_drops_spoofed_markers(ingest: Ingest) -> None:
    raw = reply_with_bcc().replace(b"X-Custom:", b"X-Secure-Message-Id: evil\r\nX-Custom:")
    r = await post(ingest, raw)
    assert r.status_code == 200, r.text
    out = BytesParser(policy=default_policy).parsebytes(r.content)
    assert out.get_all("X-Secure-Message-Id") == [r.headers["x-secure-message-id"]]


async def test_placeholder_shows_the_tenant_logo(ingest: Ingest) -> None:
    await ingest.db["tenants"].update_one(
        {"_id": TENANT}, {"$set": {"branding.logo_url": "https://acme.example/logo.png"}})
    r = await post(ingest, reply_with_bcc())
    assert r.status_code == 200, r.text
    out = BytesParser(policy=default_policy).parsebytes(r.content)
    html = out.get_body(("html",)).get_content()
    assert '<img src="https://acme.example/logo.png"' in html


MALFORMED = {
    "no separator": b"From: a@acme.example\r\nTo: b@example.org\r\nSubject: x\r\n",
    "no from": b"To: b@example.org\r\nSubject: x\r\n\r\nbody\r\n",
    "no recipients": b"From: a@acme.example\r\nSubject: x\r\n\r\nbody\r\n",
    "bad from": b"From: not an address\r\nTo: b@example.org\r\n\r\nbody\r\n",
    "header injection": (b"From: a@acme.example\r\nTo: b@example.org\r\n"
                         b"Subject: =?utf-8?q?hi=0D=0ABcc:_evil@example.org?=\r\n\r\nbody\r\n"),
    "garbage": b"\x00\x01\x02 this is not mail\r\n\r\n\xff\xfe",
    "no header fields": b"just some text\n\nmore text\n",
    "multipart without boundary": (b"From: a@acme.example\r\nTo: b@example.org\r\n"
                                   b"Content-Type: multipart/mixed\r\n\r\nbody\r\n"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_messages_are_refused_and_nothing_is_stored(ingest: Ingest,
                                                                   name: str) -> None:
    r = await post(ingest, MALFORMED[name])
    assert r.status_code == 400, (name, r.text)
    assert r.json()["error"] and r.json()["detail"]
    await ingest.assert_nothing_stored()


async def test_other_content_type_is_415(ingest: Ingest) -> None:
    r = await post(ingest, outlook(), ctype="text/plain")
    assert r.status_code == 415
    await ingest.assert_nothing_stored()


async def test_over_the_tenant_size_limit_is_413(ingest: Ingest) -> None:
    raw = reply_with_bcc().replace(b"body\r\n", b"x" * 250_000 + b"\r\n")
    r = await post(ingest, raw)
    assert r.status_code == 413
    await ingest.assert_nothing_stored()


async def test_needs_an_api_key(ingest: Ingest) -> None:
    r = await ingest.client.post("/v1/messages/rfc822", content=outlook(),
                                 headers={"Content-Type": "message/rfc822"})
    assert r.status_code == 401
    await ingest.assert_nothing_stored()
