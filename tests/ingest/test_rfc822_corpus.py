"""A corpus of real-shaped messages through POST /v1/messages/rfc822, built here (no downloads).

Outlook (TNEF winmail.dat, related inline images, an attached Outlook item), Gmail, Apple Mail,
Thunderbird (format=flowed, RFC 2231 filenames), 8-bit bodies and headers, encoded words in
many charsets, forwards as message/rfc822, digests, bounce reports, and broken ones: missing or
unused boundaries, unknown charsets, bad base64, truncated messages. Each gets the answer it
should (200, or 400 with a reason -- never a 5xx); for every 200 every original header field is
byte-identical in the placeholder, the stored original is the message itself and the
recipients are exactly the addresses of its To, Cc and Bcc fields.
"""

from __future__ import annotations

import base64
import binascii
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy

import pytest

from tests.ingest.conftest import Ingest
from tests.ingest.test_rfc822 import (
    PDF,
    PNG,
    WINMAIL,
    check_placeholder,
    outlook,
    post,
    stored_objects,
)
from tests.ingest.test_rfc822_hostile import FORWARDED, forward_message

B64 = base64.encodebytes


def crlf(text: bytes) -> bytes:
    return text.replace(b"\n", b"\r\n")


def outlook_related() -> bytes:
    return crlf(
        b"From: =?iso-8859-1?Q?J=FCrgen_M=FCller?= <juergen@acme.example>\n"
        b"To: =?iso-8859-1?Q?B=F6b?= <bob@example.org>, \"Doe, Jane\" <jane@example.org>\n"
        b"Subject: =?iso-8859-1?Q?Pr=FCfbericht_f=FCr_Q3?=\n"
        b"Thread-Topic: =?iso-8859-1?Q?Pr=FCfbericht_f=FCr_Q3?=\n"
        b"Date: Tue, 1 Dec 2026 08:00:00 +0100\n"
        b"Message-ID: <DB9PR01MB0001.eurprd01.prod.outlook.com>\n"
        b"Content-Language: de-DE\n"
        b"X-MS-Has-Attach: yes\n"
        b"Content-Type: multipart/related;\n\tboundary=\"_rel_\";\n"
        b"\ttype=\"multipart/alternative\"\n"
        b"MIME-Version: 1.0\n\n"
        b"--_rel_\nContent-Type: multipart/alternative; boundary=\"_alt_\"\n\n"
        b"--_alt_\nContent-Type: text/plain; charset=\"iso-8859-1\"\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nSiehe Bericht. Gr=FC=DFe\n\n"
        b"--_alt_\nContent-Type: text/html; charset=\"iso-8859-1\"\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b"<html><body><img src=3D\"cid:image001.png@01DA\">Gr=FC=DFe</body></html>\n\n"
        b"--_alt_--\n\n"
        b"--_rel_\nContent-Type: image/png; name=\"image001.png\"\n"
        b"Content-Description: image001.png\n"
        b"Content-Disposition: inline; filename=\"image001.png\"\n"
        b"Content-ID: <image001.png@01DA>\nContent-Transfer-Encoding: base64\n\n"
        + B64(PNG) + b"\n--_rel_--\n")


def outlook_item() -> bytes:
    """An Outlook item attached as message/rfc822 with base64 transfer encoding (Exchange does
    this although RFC 2046 forbids it)."""
    return crlf(
        b"From: jane.doe@acme.example\nTo: bob@example.org\nSubject: FW: item\n"
        b"Content-Type: multipart/mixed; boundary=\"_x_\"\nMIME-Version: 1.0\n\n"
        b"--_x_\nContent-Type: text/plain\n\nsee attached\n\n"
        b"--_x_\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=\"item.eml\"\n\n"
        + B64(FORWARDED) + b"\n--_x_--\n")


def gmail_rfc2231() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Zoë <zoe@acme.example>"
    msg["To"] = "bob@example.org"
    msg["Cc"] = "Ünal Özdemir <unal@example.net>"
    msg["Subject"] = "Ihr Befund: " + "sehr lange Betreffzeile " * 6
    msg["Message-ID"] = "<CAF=long+gmail@mail.gmail.com>"
    msg.set_content("Hallo,\n" + "Zeile mit Umlauten äöü\n" * 3)
    msg.add_attachment(PDF, maintype="application", subtype="pdf",
                       filename="Befund für Herrn Müller \u2013 2026.pdf")
    return msg.as_bytes()


def thunderbird() -> bytes:
    refs = b"\n ".join(b"<%d.tb@example.org>" % i for i in range(8))
    return crlf(
        b"Message-ID: <b1c2d3e4-tb@acme.example>\n"
        b"Date: Wed, 2 Dec 2026 10:00:00 +0100\n"
        b"MIME-Version: 1.0\n"
        b"User-Agent: Mozilla Thunderbird\n"
        b"Content-Language: en-GB\n"
        b"To: bob@example.org\n"
        b"From: Ann <ann@acme.example>\n"
        b"Subject: Re: figures\n"
        b"References: " + refs + b"\n"
        b"In-Reply-To: <7.tb@example.org>\n"
        b"Content-Type: multipart/mixed;\n boundary=\"------------tb0123\"\n\n"
        b"This is a multi-part message in MIME format.\n"
        b"--------------tb0123\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\n"
        b"Content-Transfer-Encoding: 8bit\n\n"
        b"A flowed line that goes on \nand on.\n\n-- \nAnn\n\n"
        b"--------------tb0123\n"
        b"Content-Type: text/csv; charset=UTF-8;\n name*=UTF-8''Zahlen%20%C3%A4.csv\n"
        b"Content-Disposition: attachment;\n filename*=UTF-8''Zahlen%20%C3%A4.csv\n"
        b"Content-Transfer-Encoding: base64\n\n" + B64(b"a;b\r\n1;2\r\n")
        + b"\n--------------tb0123--\n")


def apple_forward() -> bytes:
    return forward_message(b"\n")[0]


def eight_bit_latin1() -> bytes:
    return crlf(b"From: a@acme.example\nTo: bob@example.org\nSubject: Gr\xfc\xdfe\n"
                b"Content-Type: text/plain; charset=iso-8859-1\n"
                b"Content-Transfer-Encoding: 8bit\n\nGr\xfc\xdfe aus K\xf6ln\n")


def raw_utf8_headers() -> bytes:
    # RFC 6532: UTF-8 straight in the header, display names included.
    return crlf("From: Zoë <zoe@acme.example>\nTo: Ünal <unal@example.net>\n"
                "Subject: Grüße \u2013 ß\nContent-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: 8bit\n\nSchöne Grüße\n".encode())


def encoded_words() -> bytes:
    return crlf(
        b"From: =?utf-8?b?5bGx55Sw5aSq6YOO?= <taro@acme.example>\n"
        b"To: =?iso-2022-jp?b?GyRCOzNFRBsoQg==?= <yamada@example.jp>\n"
        b"Subject: =?utf-8?b?5pel5pys6Kqe44Gu5Lu25ZCN?=\n =?utf-8?q?_und_Deutsch_=C3=A4?=\n"
        b"Content-Type: text/plain; charset=iso-2022-jp\nContent-Transfer-Encoding: 7bit\n\n"
        b"\x1b$B$3$s$K$A$O\x1b(B\n")


def unknown_charsets() -> bytes:
    return crlf(b"From: a@acme.example\nTo: bob@example.org\n"
                b"Subject: =?x-klingon?q?qapla=27?= and =?utf-8?q?broken=ZZ?=\n"
                b"Content-Type: multipart/alternative; boundary=b\n\n"
                b"--b\nContent-Type: text/plain; charset=x-klingon\n\nqapla'\n"
                b"--b\nContent-Type: text/html; charset=\"\"\n\n<p>x</p>\n--b--\n")


def digest() -> bytes:
    inner = b"From: x@example.net\nSubject: one\n\nfirst\n"
    return crlf(b"From: list@acme.example\nTo: bob@example.org\nSubject: Digest\n"
                b"Content-Type: multipart/digest; boundary=d\n\n"
                b"--d\n\n" + inner + b"\n--d\n\n" + inner.replace(b"one", b"two")
                + b"\n--d--\n")


def bounce() -> bytes:
    return crlf(b"From: MAILER-DAEMON@acme.example\nTo: alice@example.org\n"
                b"Subject: Undelivered Mail Returned to Sender\n"
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
                b"--r\nContent-Type: text/plain\n\nThis is the mail system.\n\n"
                b"--r\nContent-Type: message/delivery-status\n\n"
                b"Reporting-MTA: dns; mx.acme.example\n\nFinal-Recipient: rfc822; x@y.example\n"
                b"Action: failed\nStatus: 5.1.1\n\n"
                b"--r\nContent-Type: text/rfc822-headers\n\nFrom: alice@example.org\n"
                b"Subject: hi\n\n--r--\n")


def missing_close_boundary() -> bytes:
    return crlf(b"From: a@acme.example\nTo: bob@example.org\nSubject: no end\n"
                b"Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\n"
                b"body\n--q\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
                b"Content-Disposition: attachment; filename=a.pdf\n\n" + B64(PDF[:300]))


def bad_base64() -> bytes:
    return crlf(b"From: a@acme.example\nTo: bob@example.org\nSubject: bad b64\n"
                b"Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\n"
                b"body\n--q\nContent-Type: application/octet-stream\n"
                b"Content-Transfer-Encoding: base64\n\nQUJD=RE!!#\n--q--\n")


def qp_soft_breaks() -> bytes:
    text = "Lange Zeile mit Umlauten äöü " * 10
    return crlf(b"From: a@acme.example\nTo: bob@example.org\nSubject: qp\n"
                b"Content-Type: text/plain; charset=utf-8\n"
                b"Content-Transfer-Encoding: quoted-printable\n\n"
                + binascii.b2a_qp(text.encode()) + b"\n")


def long_header_line() -> bytes:
    return crlf(b"From: a@acme.example\nTo: bob@example.org\nSubject: long\n"
                b"X-Long: " + b"x" * 2000 + b"\n\nbody\n")


def unused_boundary() -> bytes:
    # The boundary is declared but never used: no first boundary, a broken structure.
    return crlf(b"From: a@acme.example\nTo: bob@example.org\nSubject: x\n"
                b"Content-Type: multipart/mixed; boundary=never\n\njust text\n")


def multipart_without_boundary() -> bytes:
    return crlf(b"From: a@acme.example\nTo: bob@example.org\n"
                b"Content-Type: multipart/mixed\n\nbody\n")


def header_only() -> bytes:
    return b"From: a@acme.example\r\nTo: bob@example.org\r\nSubject: empty\r\n\r\n"


CORPUS = {
    # name: (build, expected status)
    "outlook tnef": (outlook, 200),
    "outlook related": (outlook_related, 200),
    "outlook item base64": (outlook_item, 200),
    "gmail rfc2231": (gmail_rfc2231, 200),
    "thunderbird": (thunderbird, 200),
    "apple forward LF": (apple_forward, 200),
    "8bit latin-1": (eight_bit_latin1, 200),
    "raw utf-8 headers": (raw_utf8_headers, 200),
    "encoded words": (encoded_words, 200),
    "unknown charsets": (unknown_charsets, 200),
    "digest": (digest, 200),
    "bounce": (bounce, 200),
    "missing close boundary": (missing_close_boundary, 200),
    "bad base64": (bad_base64, 200),
    "quoted-printable": (qp_soft_breaks, 200),
    "long header line": (long_header_line, 200),
    "header only": (header_only, 200),
    "truncated in the header": (lambda: outlook()[:300], 400),
    "truncated in base64": (lambda: outlook()[:-200], 200),
    "unused boundary": (unused_boundary, 400),
    "multipart without boundary": (multipart_without_boundary, 400),
}


DIGEST_ITEM = b"From: x@example.net\r\nSubject: one\r\n\r\nfirst\r\n"
# Attachments whose exact bytes are known (names as stored).
ATTACHMENTS = {
    "outlook tnef": [("winmail.dat", WINMAIL)],
    "outlook related": [("image001.png", PNG)],
    "outlook item base64": [("item.eml", FORWARDED)],
    "gmail rfc2231": [("Befund für Herrn Müller \u2013 2026.pdf", PDF)],
    "thunderbird": [("Zahlen ä.csv", b"a;b\r\n1;2\r\n")],
    "apple forward LF": [("Gruesse.eml", FORWARDED.replace(b"\r\n", b"\n"))],
    "digest": [("message.eml", DIGEST_ITEM),
               ("message.eml", DIGEST_ITEM.replace(b"one", b"two"))],
    "bounce": [("attachment", b"Reporting-MTA: dns; mx.acme.example\r\n\r\n"
                              b"Final-Recipient: rfc822; x@y.example\r\nAction: failed\r\n"
                              b"Status: 5.1.1\r\n"),
               ("attachment", b"From: alice@example.org\r\nSubject: hi\r\n")],
}


def addresses(raw: bytes, names: tuple[str, ...]) -> list[str]:
    msg = BytesParser(policy=default_policy).parsebytes(raw)
    return [a.addr_spec for n in names for h in msg.get_all(n) or () for a in h.addresses]


@pytest.mark.parametrize("name", list(CORPUS))
async def test_corpus_message_gets_its_answer(ingest: Ingest, name: str) -> None:
    build, expected = CORPUS[name]
    raw = build()
    r = await post(ingest, raw)
    assert r.status_code == expected, (name, r.text)
    if expected != 200:
        assert r.json()["detail"]
        await ingest.assert_nothing_stored()
        return
    message_id = r.headers["x-secure-message-id"]
    check_placeholder(raw, r.content, message_id, [])
    [event] = await ingest.events()
    assert [x.address for x in event.recipients] == addresses(raw, ("To", "Cc", "Bcc"))
    assert [event.sender] == addresses(raw, ("From",))
    original = [o for o in event.objects if o.role == "original"]
    assert len(original) == 1 and original[0].size == len(raw)
    if name in ATTACHMENTS:
        assert (await stored_objects(ingest))["attachment"] == ATTACHMENTS[name]
