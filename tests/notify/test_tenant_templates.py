"""Tenant templates in the notification: used when stored, markers kept regardless, the
default when a stored template fails at render time."""

from __future__ import annotations

import email
import email.policy
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.notify.compose import build_notification
from secmsg.notify.ports import TenantBranding
from secmsg.shared import mongo, templating
from secmsg.shared.settings import CommonSettings
from tests.notify.conftest import DISCLAIMER, FOOTER, Bus, eventually, stored_event

pytestmark = pytest.mark.timeout(60)

TEXT = ("Hello from {{ tenant_name }}!\n{{ sender }} has something for you "
        "({{ attachment_count }} files).\nOpen: {{ link }}\n")
HTML = ("<h1>Hello from {{ tenant_name }}</h1><p>{{ subject }}</p>"
        "<p><a class=\"tenant-link\" href=\"{{ link }}\">Open</a></p>\n")
# Valid at save (the sample has 2 attachments); over the output limit with more than 5.
FRAGILE = ("{% if attachment_count > 5 %}{% for i in range(100000) %}xxxxxxxxxx{% endfor %}"
           "{% endif %}TENANT {{ link }}\n")


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def bodies(msg: Any) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def assert_markers(msg: Any, message_id: str, url: str) -> None:
    text, html = bodies(msg)
    assert msg["X-Secure-Message-Id"] == message_id
    assert msg["X-Secure-Message-Url"] == url
    assert f"Secure-Message-Id: {message_id}\r\nSecure-Message-Url: {url}" in text
    assert f'<meta name="secure-message-id" content="{message_id}">' in html
    assert f'data-secure-message-url="{url}"' in html
    assert f'class="secure-message-marker">Secure-Message-Id: {message_id}</span>' in html


def build(branding: TenantBranding, **event: Any) -> tuple[Any, Any]:
    ev = stored_event(to=["bob@example.org"], **event)
    note = build_notification(event=ev, recipient="bob@example.org", branding=branding,
                              platform_from="notifications@secmsg.example",
                              public_url="https://secure.example/", now=datetime.now(UTC))
    return ev, parse(note.as_bytes())


def test_tenant_templates_shape_the_body_only() -> None:
    for kind, source in (("notification_text", TEXT), ("notification_html", HTML)):
        templating.validate(kind, source)  # what ingest stores is valid
    branding = TenantBranding("acme", "Acme & Co", FOOTER, (DISCLAIMER,),
                              {"notification_text": TEXT, "notification_html": HTML})
    ev, msg = build(branding, subject="<script>x</script>")
    url = f"https://secure.example/m/acme/{ev.message_id}"
    text, html = bodies(msg)
    assert text.startswith("Hello from Acme & Co!\r\nalice@acme.example has something")
    assert f"Open: {url}" in text
    assert "<h1>Hello from Acme &amp; Co</h1><p>&lt;script&gt;x&lt;/script&gt;</p>" in html
    assert f'class="tenant-link" href="{url}"' in html
    assert FOOTER not in text  # the tenant's template left it out: its choice
    assert msg["Subject"] == "<script>x</script>"  # subject and recipients stay the sender's
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org"]
    assert_markers(msg, ev.message_id, url)


def test_a_template_failing_at_render_falls_back_to_the_default(
        caplog: pytest.LogCaptureFixture) -> None:
    templating.validate("notification_text", FRAGILE)
    branding = TenantBranding("acme", "Acme", FOOTER, (DISCLAIMER,),
                              {"notification_text": FRAGILE})
    ev, msg = build(branding, attachment_count=1)
    assert bodies(msg)[0].startswith("TENANT https://")
    with caplog.at_level(logging.WARNING, logger="secmsg.notify.compose"):
        ev, msg = build(branding, attachment_count=6)
    text, _ = bodies(msg)
    assert "TENANT" not in text
    assert "sent you a secure message through Acme" in text and FOOTER in text  # the default
    assert_markers(msg, ev.message_id, f"https://secure.example/m/acme/{ev.message_id}")
    assert any("failed at render (payload_too_large)" in r.getMessage() for r in caplog.records)


async def test_sent_mail_uses_the_stored_tenant_template(
        mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    now = datetime.now(UTC)
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "acme", "name": "acme", "display_name": "Acme Medical", "created_at": now,
        "footer": FOOTER, "disclaimers": [DISCLAIMER],
        "templates": {
            "notification_text": {"source": TEXT, "version": 3, "updated_at": now},
            "notification_html": {"source": HTML, "version": 1, "updated_at": now},
            "unknown_kind": {"source": "ignored"}}})
    await start_notify()
    ev = stored_event(to=["bob@example.org"], subject="Scan <results>")
    await nbus.publish(ev)
    [cap] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             what="the notification")
    msg = cap.message
    url = f"https://127.0.0.1:8443/m/acme/{ev.message_id}"
    # the body's link names its recipient (``?r=``), the toolbar markers stay the plain URL
    hint = CommonSettings().key_ring.recipient_hint("acme", ev.message_id, "bob@example.org")
    text, html = bodies(msg)
    assert text.startswith("Hello from Acme Medical!\r\nalice@acme.example has something")
    assert f"Open: {url}?r={hint}" in text
    assert "<p>Scan &lt;results&gt;</p>" in html and f'href="{url}?r={hint}"' in html
    assert msg["Subject"] == "Scan <results>"
    assert_markers(msg, ev.message_id, url)


async def test_the_tenant_logo_shows_in_the_default_html_notification(
        mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    logo = "https://www.acme.example/logo.png?v=1&x=2"
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "acme", "name": "acme", "display_name": "Acme Medical",
        "created_at": datetime.now(UTC), "footer": FOOTER, "disclaimers": [DISCLAIMER],
        "branding": {"logo_url": logo}})
    await start_notify()
    ev = stored_event(to=["bob@example.org"])
    await nbus.publish(ev)
    [cap] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             what="the notification")
    text, html = bodies(cap.message)
    assert '<img src="https://www.acme.example/logo.png?v=1&amp;x=2" alt="Acme Medical"' in html
    assert "logo.png" not in text


async def test_the_render_limit_setting_applies_to_tenant_templates(
        mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    """SECMSG_NOTIFY_TEMPLATE_TIMEOUT_S lowers the 0.5 s save-time limit for sending: a stored
    template slower than the setting (valid at save) gives way to the default."""
    slow = ("{% for i in range(3000) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
            "SLOW {{ link }}\n")  # about 0.3 s here, well over the 0.02 s set below
    now = datetime.now(UTC)
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "acme", "name": "acme", "display_name": "Acme Medical", "created_at": now,
        "footer": FOOTER, "disclaimers": [DISCLAIMER],
        "templates": {"notification_text": {"source": slow, "version": 1, "updated_at": now}}})
    await start_notify(SECMSG_NOTIFY_TEMPLATE_TIMEOUT_S="0.02")
    ev = stored_event(to=["bob@example.org"])
    await nbus.publish(ev)
    [cap] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             what="the notification")
    text, _ = bodies(cap.message)
    assert "SLOW" not in text
    assert "sent you a secure message through Acme Medical" in text
