"""POST /v1/messages/rfc822 and POST /v1/messages with hostile header and MIME shapes.

Each input here was accepted (or answered 500) before: a bare CR that turned a Subject into a
Bcc recipient, an encoded word that decodes to CR LF inside an address, MIME nested a
thousand levels deep, control characters that Python's ``str.splitlines`` (and so the email
package's folding) treats as line breaks, and a forwarded message whose CRLFs were rewritten.
"""

from __future__ import annotations

import base64

import pytest

from secmsg.ingest.rfc822 import MAX_MIME_DEPTH
from tests.ingest.conftest import Ingest, env_part, envelope
from tests.ingest.test_rfc822 import check_placeholder, post, stored_objects

HEAD = b"From: alice@acme.example\r\nTo: bob@example.org\r\n"


async def refused(ingest: Ingest, raw: bytes, *words: str) -> str:
    r = await post(ingest, raw)
    assert r.status_code == 400, r.text
    detail = str(r.json()["detail"])
    for w in words:
        assert w in detail, (w, detail)
    await ingest.assert_nothing_stored()
    return detail


@pytest.mark.parametrize("raw", [
    HEAD + b"Subject: hi\rBcc: victim@else.example\r\n\r\nbody\r\n",
    HEAD + b"Subject: hi\nBcc: victim@else.example\r\n\r\nbody\r\n",
    # LF-terminated message: a CR in it is bare too.
    b"From: alice@acme.example\nTo: bob@example.org\nSubject: hi\rBcc: victim@else.example\n"
    b"\nbody\n",
    # In a continuation line of the Subject.
    HEAD + b"Subject: hi\r\n there\rBcc: victim@else.example\r\n\r\nbody\r\n",
], ids=["bare CR", "bare LF", "bare CR in LF message", "bare CR in continuation"])
async def test_a_bare_line_break_in_a_header_is_refused_naming_it(ingest: Ingest,
                                                                  raw: bytes) -> None:
    detail = await refused(ingest, raw, "Subject")
    assert "bare" in detail


async def test_nul_in_a_header_is_refused_naming_it(ingest: Ingest) -> None:
    await refused(ingest, HEAD + b"X-Note: a\0b\r\n\r\nbody\r\n", "X-Note", "NUL")


async def test_white_space_before_a_colon_is_refused(ingest: Ingest) -> None:
    # The email package reads "Bcc :" as the start of the body, we would have kept it as a
    # header: the two readings differ, so neither is used.
    await refused(ingest, b"From: alice@acme.example\r\nBcc : victim@else.example\r\n"
                          b"To: bob@example.org\r\n\r\nbody\r\n", "Bcc", "white space")


@pytest.mark.parametrize("to", [
    b"=?utf-8?q?x=0D=0ABcc:_victim@else.example?= <bob@example.org>",
    b"=?utf-8?q?x=0D=0A?=@example.org",
    b"=?utf-8?b?" + base64.b64encode(b"Bob\r\nBcc: victim@else.example") + b"?= <b@example.org>",
], ids=["display name", "local part", "base64 word"])
async def test_an_encoded_line_break_in_an_address_is_400(ingest: Ingest, to: bytes) -> None:
    await refused(ingest, b"From: alice@acme.example\r\nTo: " + to + b"\r\n\r\nbody\r\n", "To")


@pytest.mark.parametrize("to", [
    b"bob@example.org; victim@else.example",
    b"Jane Doe victim@else.example",
    b"bob@example.org <victim@else.example>",
    b"(" * 3000 + b"bob@example.org",
], ids=["semicolon", "no brackets", "address as name", "deep comments"])
async def test_recipients_only_from_a_cleanly_parsed_field(ingest: Ingest, to: bytes) -> None:
    await refused(ingest, b"From: alice@acme.example\r\nTo: " + to + b"\r\n\r\nbody\r\n", "To")


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e",
                                  "\x01", "\x7f", "\x85", "\u2028"])
async def test_control_characters_in_a_json_subject_are_400(ingest: Ingest, char: str) -> None:
    r = await ingest.post([env_part(envelope(subject=f"hi{char}Bcc: victim@else.example"))])
    assert r.status_code == 400, r.text
    assert "subject" in r.json()["detail"] and "control character" in r.json()["detail"]
    await ingest.assert_nothing_stored()


async def test_tab_in_a_json_subject_is_fine(ingest: Ingest) -> None:
    r = await ingest.post([env_part(envelope(subject="a\tb"))])
    assert r.status_code == 202, r.text
    assert (await ingest.events())[0].subject == "a\tb"


@pytest.mark.parametrize("header", [
    b"Subject: =?utf-8?q?hi=0BBcc:_victim@else.example?=",
    b"Subject: =?utf-8?q?hi=1Cthere?=",
    b"Subject: hi\x0bthere",
    b"Cc: =?utf-8?q?Eve=1E?= <eve@example.org>",
    b"Cc: =?utf-8?q?Eve=0C?= <eve@example.org>",
], ids=["encoded VT", "encoded FS", "raw VT", "display name RS", "display name FF"])
async def test_control_characters_in_a_message_header_are_400(ingest: Ingest,
                                                             header: bytes) -> None:
    name = header.split(b":")[0].decode()
    await refused(ingest, HEAD + header + b"\r\n\r\nbody\r\n", name)


def nested_multipart(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for i in range(depth):
        body = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                + body + b"\r\n--b%d--\r\n" % i)
    return HEAD + b"Subject: deep\r\n" + body


@pytest.mark.parametrize("depth", [MAX_MIME_DEPTH + 1, 1000, 2500])
async def test_mime_nested_beyond_the_limit_is_400(ingest: Ingest, depth: int) -> None:
    await refused(ingest, nested_multipart(depth), "nests more than 64 levels")


async def test_mime_nested_to_the_limit_is_accepted(ingest: Ingest) -> None:
    r = await post(ingest, nested_multipart(MAX_MIME_DEPTH))
    assert r.status_code == 200, r.text
    assert (await stored_objects(ingest))["text"] == [(None, b"innermost\r\n")]


async def test_forwards_inside_forwards_are_one_attachment(ingest: Ingest) -> None:
    inner = b"From: x@example.net\r\nTo: y@example.net\r\nSubject: inner\r\n\r\ntext\r\n"
    for _ in range(2000):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    raw = HEAD + b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n" \
        b"--zz\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--zz\r\n" + inner + \
        b"\r\n--zz--\r\n"
    r = await post(ingest, raw)
    assert r.status_code == 200, r.text
    stored = await stored_objects(ingest)
    assert stored["attachment"] == [("message.eml", inner.split(b"\r\n\r\n", 1)[1])]


FORWARDED = (
    # A forward as Apple Mail attaches it: CRLF line ends, folded headers, trailing white
    # space, a header in a case nobody writes and 8-bit text -- all of which re-serialising
    # the parsed message changes.
    b"Return-Path: <carol@example.org>\r\n"
    b"Received: from mx.example.org (mx.example.org [192.0.2.7])\r\n"
    b"\tby mail.acme.example; Mon, 30 Nov 2026 09:00:00 +0000\r\n"
    b"From:   Carol <carol@example.org>  \r\n"
    b"to: alice@acme.example\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe\r\n"
    b"\r\n"
    b"a line with trailing space   \r\n"
    b"-- \r\n"
    b"Carol\r\n")


def forward_message(newline: bytes, cte: bytes | None = None) -> tuple[bytes, bytes]:
    """An Apple-Mail-shaped forward with the message above attached; (raw, attached bytes)."""
    attached = FORWARDED if newline == b"\r\n" else FORWARDED.replace(b"\r\n", b"\n")
    encoded = attached
    part_head = [b"Content-Disposition: attachment; filename=\"Gruesse.eml\"",
                 b"Content-Type: message/rfc822"]
    if cte == b"base64":
        encoded = base64.encodebytes(attached).replace(b"\n", newline)
        part_head.append(b"Content-Transfer-Encoding: base64")
    lines = [b"From: Alice <alice@acme.example>", b"To: bob@example.org",
             b"Subject: Fwd: Gruesse", b"Mime-Version: 1.0 (Mac OS X Mail 16.0)",
             b'Content-Type: multipart/mixed; boundary="Apple-Mail=_FWD"', b"",
             b"--Apple-Mail=_FWD", b"Content-Type: text/plain; charset=us-ascii", b"",
             b"See the forwarded mail.", b"", b"--Apple-Mail=_FWD", *part_head, b""]
    raw = newline.join(lines) + newline + encoded + newline + b"--Apple-Mail=_FWD--" + newline
    return raw, attached


@pytest.mark.parametrize(("newline", "cte"), [(b"\r\n", None), (b"\n", None),
                                              (b"\r\n", b"base64")],
                         ids=["CRLF", "LF", "base64"])
async def test_a_forwarded_message_is_stored_byte_for_byte(ingest: Ingest, newline: bytes,
                                                          cte: bytes | None) -> None:
    raw, attached = forward_message(newline, cte)
    r = await post(ingest, raw)
    assert r.status_code == 200, r.text
    stored = await stored_objects(ingest)
    assert stored["attachment"] == [("Gruesse.eml", attached)]
    assert stored["original"] == [(None, raw)]
    check_placeholder(raw, r.content, r.headers["x-secure-message-id"], [b"Sch\xc3\xb6ne"])


async def test_a_bounce_report_keeps_its_delivery_status(ingest: Ingest) -> None:
    status = (b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
              b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\n"
              b"Status: 5.1.1\r\n")
    raw = (HEAD + b"Subject: Undeliverable\r\nContent-Type: multipart/report; "
           b"report-type=delivery-status; boundary=r\r\n\r\n--r\r\n"
           b"Content-Type: text/plain\r\n\r\nIt bounced.\r\n--r\r\n"
           b"Content-Type: message/delivery-status\r\n\r\n" + status + b"\r\n--r--\r\n")
    r = await post(ingest, raw)
    assert r.status_code == 200, r.text
    assert (await stored_objects(ingest))["attachment"] == [("attachment", status)]
