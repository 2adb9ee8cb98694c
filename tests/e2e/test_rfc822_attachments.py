"""End to end: a whole message in through ``POST /v1/messages/rfc822`` (as a mail server or an
Outlook transport rule relays it), every attachment out through retrieve, byte for byte.

The message carries an Apple Mail forward (``message/rfc822`` with CRLF line ends, folded and
oddly spaced headers -- the bytes the email package changed when it re-serialised the parsed
forward), a text file in 8bit with CRLFs and trailing blanks, a quoted-printable calendar
entry, a base64 PDF and an Outlook ``winmail.dat``.
"""

from __future__ import annotations

import base64
import binascii
import os

import httpx
import pytest

from tests.e2e.helpers import Platform, eventually
from tests.ingest.test_rfc822_hostile import FORWARDED

pytestmark = pytest.mark.timeout(240)

NOTES = b"line one  \r\nline two\twith tab\r\n\r\nlast line without newline"
CALENDAR = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
            b"SUMMARY:Besprechung \xc3\xbcber Befund\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
PDF = b"%PDF-1.4\r\n" + os.urandom(5000) + b"\r\n%%EOF\r\n"
WINMAIL = b"\x78\x9f\x3e\x22" + os.urandom(3000)


def message() -> tuple[bytes, dict[str, bytes]]:
    b = b"----=_NextPart_000_0001"
    parts = [
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attachments.",
        b'Content-Type: message/rfc822\r\nContent-Disposition: attachment; '
        b'filename="Gruesse.eml"\r\n\r\n' + FORWARDED,
        b'Content-Type: text/plain; charset=utf-8; name="notes.txt"\r\n'
        b'Content-Disposition: attachment; filename="notes.txt"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + NOTES,
        b'Content-Type: text/calendar; charset=utf-8; method=REQUEST; name="invite.ics"\r\n'
        b'Content-Disposition: attachment; filename="invite.ics"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + binascii.b2a_qp(CALENDAR, istext=True),
        b'Content-Type: application/pdf; name="report.pdf"\r\n'
        b'Content-Disposition: attachment; filename="report.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(PDF).replace(b"\n", b"\r\n"),
        b'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
        b'Content-Disposition: attachment; filename="winmail.dat"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(WINMAIL).replace(b"\n", b"\r\n"),
    ]
    raw = (b"From: Alice <alice@acme.example>\r\nTo: bob@example.org\r\n"
           b"Subject: Fwd: Gruesse and files\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n'
           + b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts)
           + b"--" + b + b"--\r\n")
    return raw, {"Gruesse.eml": FORWARDED, "notes.txt": NOTES, "invite.ics": CALENDAR,
                 "report.pdf": PDF, "winmail.dat": WINMAIL}


async def test_every_attachment_downloads_byte_identical(platform: Platform) -> None:
    raw, attachments = message()
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(platform.ingest_url + "/v1/messages/rfc822", content=raw,
                         headers={"Authorization": f"Bearer {platform.api_key}",
                                  "Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text
    message_id = r.headers["x-secure-message-id"]
    await eventually(lambda: platform.count("messages", {"_id": message_id}), timeout=60,
                     what="the message stored")

    async with platform.retrieve_client() as web:
        token = await platform.sign_in(web, "bob@example.org")
        auth = {"Authorization": f"Bearer {token}"}
        r = await web.get(f"/v1/messages/{message_id}", headers=auth)
        assert r.status_code == 200, r.text
        by_name = {a["filename"]: a["object_id"] for a in r.json()["attachments"]}
        assert set(by_name) == set(attachments)
        for name, content in attachments.items():
            d = await web.get(f"/v1/messages/{message_id}/attachments/{by_name[name]}",
                              headers=auth)
            assert d.status_code == 200, (name, d.text)
            assert d.content == content, name
