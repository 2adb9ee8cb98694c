"""The notification email itself (pure: no servers needed)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from secmsg.notify.compose import build_notification
from secmsg.notify.ports import TenantBranding
from secmsg.shared.errors import InvalidInput
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


def test_message_ids_are_unique_per_notification() -> None:
    ev = stored_event(to=["bob@example.org"])
    assert build(event=ev)["Message-ID"] != build(event=ev)["Message-ID"]


@pytest.mark.parametrize("field", ["subject", "sender", "recipient", "display_name"])
@pytest.mark.parametrize("bad", ["\r\nBcc: evil@example.com", "\nX-Evil: 1", "a\0b", "x\r"])
def test_line_breaks_and_nul_in_any_header_value_are_refused(field: str, bad: str) -> None:
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
