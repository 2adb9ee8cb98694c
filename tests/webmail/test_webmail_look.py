"""Every webmail page in Chromium at desktop and phone widths: axe-core (tests/axe.py) reports
no violation on any of them, and a screenshot of each lands in test-artifacts/screenshots/
(``page-<name>-<width>.png``, listed in docs/webmail.md)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from bench.recipient import code_fetcher, first_visit_code, notification_link
from secmsg.shared import mongo
from tests.axe import axe_violations, describe
from tests.e2e.helpers import Platform, submit
from tests.webmail.browser import shot

pytestmark = pytest.mark.timeout(240)
WIDTHS = {"desktop": 1280, "phone": 390}


async def _check(page: Page, name: str, found: dict[str, list[dict[str, Any]]]) -> None:
    # Button hierarchy: at most one primary (filled) action in the page's content.
    primary = page.locator("main button:not(.secondary), main a.button:not(.secondary)")
    primaries = await primary.all_inner_texts()
    if len(primaries) > 1:
        found[f"{name}: more than one primary action"] = [
            {"id": "one-primary", "impact": "", "help": ", ".join(primaries), "nodes": []}]
    for label, width in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": 900})
        violations = await axe_violations(page)
        if violations:
            found[f"{name} ({label})"] = violations
        await shot(page, f"page-{name}-{label}")


async def test_every_page_passes_axe_at_desktop_and_phone_widths(
        platform: Platform, browser: Browser) -> None:
    await platform.db[mongo.TENANTS].update_one(
        {"_id": "acme"}, {"$set": {"branding": {"primary_color": "#0b6e4f"}}})
    base = platform.procs["retrieve"].base_url
    me = "frank@example.org"
    message_id = await submit(platform, sender="doctor@acme.example", to=[me],
                              subject="Your lab results", text="Dear Frank, all clear.",
                              attachments={"results.pdf": b"%PDF-1.4 results"})
    link = base + await notification_link(platform.sink, me, message_id)
    found: dict[str, list[dict[str, Any]]] = {}

    out = await browser.new_context(ignore_https_errors=True)
    page = await out.new_page()
    for name, path in (("link", link), ("signin", f"{base}/web/acme/signin"),
                       ("not-found", f"{base}/web/no-such-page"),
                       ("bad-link", f"{base}/m/acme/not-a-message-id"),
                       ("signed-out", f"{base}/web/signed-out"),
                       ("device", f"{base}/web/device")):
        await page.goto(path)
        await _check(page, name, found)
    await out.close()

    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await first_visit_code(page, link, code_fetcher(platform.sink, me), "Your lab results")
    await expect(page.get_by_text("results.pdf").first).to_be_visible()
    await _check(page, "message", found)
    for name, path in (("inbox", "/web/inbox"), ("compose", "/web/compose"),
                       ("reply", f"/web/messages/{message_id}/reply"), ("sent", "/web/sent"),
                       ("account", "/web/account"), ("apps", "/web/account/apps"),
                       ("outside-link", "/web/out?u=https://example.org/"),
                       ("gone", "/web/messages/" + "0" * 32)):
        await page.goto(base + path)
        await _check(page, name, found)
    await page.goto(base + "/web/account")
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await _check(page, "authenticator", found)
    await context.close()
    assert not found, "\n".join(f"{name}:\n{describe(v)}" for name, v in found.items())
