"""The notification a recipient gets, as notify sends it through a real SMTP server: who sent
it for which organisation, what the message is, one button, why the content is not in the
email and how to check it is genuine, the tenant's footer and disclaimers -- and accessible
(axe-core in Chromium finds 0 violations, light and dark, desktop and phone width)."""

from __future__ import annotations

import email.message
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from playwright.async_api import Browser

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.axe import axe_html, describe
from tests.notify.conftest import DISCLAIMER, FOOTER, Bus, eventually, stored_event
from tests.webmail.browser import SHOTS

pytestmark = pytest.mark.timeout(120)

LOGO = "https://www.acme.example/logo.png"
WIDTHS = {"desktop": 1024, "phone": 375}


class _Links(HTMLParser):
    """The links and images of the visible body (the frame's hidden marker span aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[dict[str, str | None], str]] = []
        self.images: list[dict[str, str | None]] = []
        self._open: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), ""
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._open, self._text.strip()))
            self._open = None


async def _send_one(mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any,
                    ) -> tuple[Any, email.message.EmailMessage]:
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "acme", "name": "acme", "display_name": "Acme Medical",
        "created_at": datetime.now(UTC), "footer": FOOTER, "disclaimers": [DISCLAIMER],
        "branding": {"logo_url": LOGO}})
    await start_notify()
    ev = stored_event(to=["bob@example.org"], subject="Scan <results> & notes",
                      attachment_count=3, expires_at=datetime(2031, 3, 4, 15, 30, tzinfo=UTC))
    await nbus.publish(ev)
    [cap] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             what="the notification")
    return ev, cap.message


async def test_the_notification_says_what_it_is_and_passes_axe(
        mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any, browser: Browser) -> None:
    ev, msg = await _send_one(mongo_db, sink, nbus, start_notify)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    url = f"https://127.0.0.1:8443/m/acme/{ev.message_id}"

    # one clear button, to the message (the recipient's hint in the link); the same link
    # written out for clients that drop the button; no other link
    parser = _Links()
    parser.feed(html)
    buttons = [(a, t) for a, t in parser.links if "sm-btn-a" in (a.get("class") or "")]
    assert len(buttons) == 1 and buttons[0][1] == "Open the secure message"
    link = buttons[0][0]["href"] or ""
    assert re.fullmatch(re.escape(url) + r"\?r=[A-Za-z0-9_-]+", link), link
    assert {a["href"] for a, _ in parser.links} == {link}
    assert [i.get("alt") for i in parser.images] == ["Acme Medical"]
    assert parser.images[0]["src"] == LOGO

    # what the message is, escaped; who sent it for whom; why the content is not here; how to
    # check it is genuine; the tenant's footer and disclaimers and the message's disclaimer
    for part in (html, text):
        assert "alice@acme.example" in part and "Acme Medical" in part
        assert "04 Mar 2031, 15:30 UTC" in part
        assert "Why is the message not in this email?" in part
        assert "Is this email genuine?" in part and "127.0.0.1" in part
        assert FOOTER in part and DISCLAIMER in part and "Please do not forward." in part
    assert "Scan &lt;results&gt; &amp; notes" in html and "Scan <results> & notes" in text
    assert re.search(r"Attachments</td><td[^>]*>3<", html)
    assert re.search(r"^Attachments: +3\r?$", text, re.M)
    assert link in text
    # made for phones and dark mode, kept by Outlook (tables, conditional comments)
    assert '<meta name="viewport"' in html and '<meta name="color-scheme"' in html
    assert "@media (prefers-color-scheme: dark)" in html and "max-width: 620px" in html
    assert "<!--[if mso]>" in html and '<html lang="en">' in html
    # the toolbar markers are still there
    assert msg["X-Secure-Message-Id"] == ev.message_id and msg["X-Secure-Message-Url"] == url
    assert f'data-secure-message-id="{ev.message_id}"' in html
    assert f"Secure-Message-Id: {ev.message_id}" in text

    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for name, width in WIDTHS.items():
            violations = await axe_html(browser, html, color_scheme=scheme, width=width,
                                        screenshot=SHOTS / f"notification-{name}-{scheme}.png")
            assert violations == [], f"{scheme}, {name}:\n{describe(violations)}"
