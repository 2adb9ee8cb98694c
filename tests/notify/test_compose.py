"""The notification email itself (pure: no servers needed)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from secmsg.notify.compose import build_notification
from secmsg.notify.ports import TenantBranding
from secmsg.shared.errors import InvalidInput
from secmsg.shared.events import MessageStored
from tests.notify.conftest import DISCLAIMER, FOOTER, stored_event

BRAND = TenantBranding("acme", "Acme Medical", FOOTER, (DISCLAIMER,))


def build(**kw: object) -> email.message.EmailMessage:
    ev = kw.pop("event", None) or stored_event(to=["bob@example.org", "carol@example.org"],
                                               cc=["dave@example.net"])
    note = build_notification(event=ev, recipient=str(kw.pop("recipient", "bob@example.org")),
                              branding=kw.pop("branding", BRAND),  # type: ignore[arg-type]
                              platform_from="notifications@secmsg.example",
                              public_url="https://secure.example/", now=datetime.now(UTC))
    raw = note.as_bytes()
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_headers_keep_what_the_sender_wrote() -> None:
    ev = stored_event(to=["bob@example.org", "carol@example.org"], cc=["dave@example.net"],
                      subject="Re: Quarterly results (confidential) — ünïcode")
    msg = build(event=ev)
    assert msg["Subject"] == "Re: Quarterly results (confidential) — ünïcode"
    assert msg["To"].addresses[0].addr_spec == "bob@example.org"
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org", "carol@example.org"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["dave@example.net"]
    assert msg["Reply-To"].addresses[0].addr_spec == "alice@acme.example"
    frm = msg["From"].addresses[0]
    assert frm.addr_spec == "notifications@secmsg.example"
    assert frm.display_name == "alice@acme.example via Acme Medical"
    assert msg["X-Secure-Message-Id"] == ev.message_id
    assert msg["X-Secure-Message-Url"] == f"https://secure.example/m/acme/{ev.message_id}"
    assert msg["Date"] and msg["Message-ID"]
    assert msg.get_content_type() == "multipart/alternative"


def test_body_has_link_footer_disclaimers_and_markers() -> None:
    ev = stored_event(to=["bob@example.org"], disclaimer="Message-specific notice.")
    msg = build(event=ev)
    url = f"https://secure.example/m/acme/{ev.message_id}"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for body in (text, html):
        assert url in body
        assert "alice@acme.example" in body
        assert "Acme Medical" in body
        assert DISCLAIMER in body
        assert "Message-specific notice." in body
    assert FOOTER in text
    assert f"Secure-Message-Id: {ev.message_id}" in text
    assert f'name="secure-message-id" content="{ev.message_id}"' in html
    assert f'data-secure-message-id="{ev.message_id}"' in html


def test_html_is_escaped_text_is_not() -> None:
    ev = stored_event(to=["bob@example.org"], subject="<script>alert(1)</script> & co")
    msg = build(event=ev, branding=TenantBranding("acme", "A<b>", "F & <i>", ("<b>x</b>",)))
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>x</b>" not in html and "F &amp; &lt;i&gt;" in html
    assert "<script>alert(1)</script> & co" in text


def test_message_id_is_one_per_message_and_recipient() -> None:
    """Distinct per recipient and per message; the same for a resend of the same notification
    (the SMTP window after a crash), so mailbox stores can de-duplicate it."""
    ev = stored_event(to=["bob@example.org", "carol@example.org"])
    other = stored_event(to=["bob@example.org"])
    bob = build(event=ev, recipient="bob@example.org")["Message-ID"]
    assert bob == build(event=ev, recipient="BOB@example.org")["Message-ID"]
    assert bob != build(event=ev, recipient="carol@example.org")["Message-ID"]
    assert other.message_id != ev.message_id
    assert bob != build(event=other, recipient="bob@example.org")["Message-ID"]


@pytest.mark.parametrize("field", ["subject", "sender", "recipient", "display_name"])
@pytest.mark.parametrize("bad", ["\r\nBcc: evil@example.com", "\nX-Evil: 1", "a\0b", "x\r",
                                 "a\x0bb", "a\x1cb", "a\x7fb", "a\u2028b"])
def test_line_breaks_nul_and_controls_in_any_header_value_are_refused(field: str, bad: str) -> None:
    kw: dict[str, object] = {}
    if field == "subject":
        kw["event"] = stored_event(to=["bob@example.org"], subject="Hello" + bad)
    elif field == "sender":
        kw["event"] = stored_event(to=["bob@example.org"], sender="alice@acme.example" + bad)
    elif field == "recipient":
        kw["event"] = stored_event(to=["bob@example.org" + bad])
        kw["recipient"] = "bob@example.org" + bad
    else:
        kw["branding"] = TenantBranding("acme", "Acme" + bad)
    with pytest.raises(InvalidInput):
        build(**kw)


def test_invalid_address_is_refused() -> None:
    with pytest.raises(InvalidInput):
        build(event=stored_event(to=["not an address"]), recipient="not an address")


# -- the hand-written MIME against what ``email.message.EmailMessage`` makes -----------------

def reference(ev: MessageStored, branding: TenantBranding) -> bytes:
    """The notification as ``EmailMessage`` (the former implementation) builds it."""
    from email.headerregistry import Address
    from email.message import EmailMessage

    from secmsg.notify.compose import POLICY
    from secmsg.shared.templating import message_url

    def addr(a: str) -> Address:
        return Address(addr_spec=a)

    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=f"{ev.sender} via {branding.display_name}",
                          username="notifications", domain="secmsg.example")
    msg["Reply-To"] = addr(ev.sender)
    if to := [addr(r.address) for r in ev.recipients if r.kind == "to"]:
        msg["To"] = to
    if cc := [addr(r.address) for r in ev.recipients if r.kind == "cc"]:
        msg["Cc"] = cc
    msg["Subject"] = ev.subject
    msg["X-Secure-Message-Id"] = ev.message_id
    msg["X-Secure-Message-Url"] = message_url("https://secure.example/", ev.tenant_id,
                                              ev.message_id)
    msg.set_content("x", cte="quoted-printable")
    return msg.as_bytes(policy=POLICY)


COMPARED = ("From", "Reply-To", "To", "Cc", "Subject", "X-Secure-Message-Id",
            "X-Secure-Message-Url")


def header_lines(raw: bytes) -> dict[str, bytes]:
    """Each compared header's raw (possibly folded) lines."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    out: dict[str, bytes] = {}
    name = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and name:
            out[name] += b"\r\n" + line
            continue
        name = line.split(b":", 1)[0].decode()
        out[name] = line
    return {k: v for k, v in out.items() if k in COMPARED}


def check_same_as_email(ev: MessageStored, branding: TenantBranding = BRAND) -> None:
    note = build_notification(event=ev, recipient=ev.recipients[0].address, branding=branding,
                              platform_from="notifications@secmsg.example",
                              public_url="https://secure.example/", now=datetime.now(UTC))
    raw = note.as_bytes()
    assert raw.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert header_lines(raw) == header_lines(reference(ev, branding))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == email.message_from_bytes(
        reference(ev, branding), policy=email.policy.default)["Subject"]
    assert not msg.defects and all(not p.defects for p in msg.walk())
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert ev.subject in text and branding.display_name in text
    assert ev.message_id in text and ev.message_id in html


@pytest.mark.parametrize("subject", [
    "Lab results", "Re: Quarterly results (confidential) — ünïcode", "日本語の件名",
    "two  spaces", " leading and trailing ", "=?utf-8?q?looks_encoded?=", "x" * 1200,
    "word " * 300, "tab\there", "quotes \"and\" back\\slash", ""])
def test_subject_written_as_email_writes_it(subject: str) -> None:
    check_same_as_email(stored_event(to=["bob@example.org"], subject=subject))


@pytest.mark.parametrize("display_name", [
    "Acme Medical", "Ünïcode Klinik", 'Quote " and \\', "plain", "x" * 200,
    "a.b (c)", "=?utf-8?q?x?="])
def test_from_written_as_email_writes_it(display_name: str) -> None:
    check_same_as_email(stored_event(to=["bob@example.org"]),
                        TenantBranding("acme", display_name, FOOTER, (DISCLAIMER,)))


@pytest.mark.parametrize("addresses", [
    ["bob@example.org", "Carol@Example.org"], ['"odd local"@example.org'],
    ["o'brien+tag@example.org", "a.b.c@sub.example.co.uk"],
    [f"recipient{i}@example.org" for i in range(80)],  # longer than 998: folded
    ["user@[192.0.2.1]"], ["bob@exämple.org"]])
def test_recipient_lists_written_as_email_writes_them(addresses: list[str]) -> None:
    check_same_as_email(stored_event(to=addresses, cc=addresses[:1]))


def test_quoted_printable_lines_are_short_and_round_trip() -> None:
    long_footer = "Footer " + "ü" * 300 + " end =  \ttrailing  "
    branding = TenantBranding("acme", "Acme", long_footer, ("line one\nline two\r\nthree",))
    msg = build(event=stored_event(to=["bob@example.org"]), branding=branding)
    raw = msg.as_bytes()
    body = raw.split(b"\n\n", 1)[1]
    assert all(len(line.rstrip(b"\r")) <= 76 for line in body.split(b"\n"))
    text = msg.get_body(("plain",)).get_content()
    assert long_footer in text
    assert "line one\r\nline two\r\nthree" in text


def test_one_rendering_serves_every_recipient() -> None:
    from secmsg.notify.compose import render_event

    ev = stored_event(to=["bob@example.org", "carol@example.org"])
    rendered = render_event(event=ev, branding=BRAND,
                            platform_from="notifications@secmsg.example",
                            public_url="https://secure.example/")
    now = datetime.now(UTC)
    a = rendered.for_recipient("bob@example.org", now=now)
    b = rendered.for_recipient("Carol@example.org", now=now)
    assert (a.recipient, b.recipient) == ("bob@example.org", "Carol@example.org")
    ma = email.message_from_bytes(a.as_bytes(), policy=email.policy.default)
    mb = email.message_from_bytes(b.as_bytes(), policy=email.policy.default)
    assert ma["Message-ID"] != mb["Message-ID"]
    assert ma["Message-ID"].endswith(f".{ev.message_id}@secmsg.example>")
    del ma["Message-ID"], mb["Message-ID"]
    assert ma.as_bytes() == mb.as_bytes()
    with pytest.raises(InvalidInput):
        rendered.for_recipient("eve@example.org\r\nBcc: x@example.org", now=now)


def test_recipient_links_match_an_encoding_per_recipient() -> None:
    """The bodies are quoted-printable encoded once per event, and each recipient's copy
    swaps the hint into the encoded bytes: byte for byte what encoding that recipient's own
    text gives -- wherever the link falls on a line (a soft line break inside the
    placeholder, or a hint of another length or alphabet, falls back to encoding per
    recipient)."""
    import binascii
    import random

    from secmsg.notify.compose import HINT_PLACEHOLDER, render_event

    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    now = datetime.now(UTC)
    hints = {"bob@example.org": "0h" + "".join(rng.choice(alphabet) for _ in range(20)),
             "carol@example.org": "12h" + "A" * 20,  # key version 12: a longer hint
             "dave@example.org": "0h" + "a.b=c" * 4}  # not literal in quoted-printable
    split = 0
    for pad in range(90):  # moves the link along its line
        ev = stored_event(to=list(hints))
        rendered = render_event(event=ev, branding=BRAND,
                                platform_from="notifications@secmsg.example",
                                public_url=f"https://s{'x' * pad}.example/",
                                hinter=lambda a: hints[a])
        split += any(any(cuts) for cuts in rendered.text_qp.breaks)  # type: ignore[union-attr]
        for address, hint in hints.items():
            got = rendered.for_recipient(address, now=now).as_bytes()
            for plain in (rendered.text, rendered.html):
                assert HINT_PLACEHOLDER in plain
                own = plain.replace(HINT_PLACEHOLDER, hint).encode("utf-8").splitlines()
                expected = binascii.b2a_qp(b"\r\n".join(own) + b"\r\n", istext=True)
                assert expected in got, (pad, address)
            msg = email.message_from_bytes(got, policy=email.policy.default)
            assert f"?r={hint}" in msg.get_body(("plain",)).get_content()
            assert HINT_PLACEHOLDER.encode() not in got
    assert split  # some placeholders were cut by a soft line break
