"""The recipient's short path (issue 14 item 1), walked in Chromium by the same functions as
``python -m bench.recipient``: here only what the person sees and does is asserted (pages,
fields, the message shown), never a time.

A mail scanner opening the notification link first (a plain GET, as scanners do) sends no code
and signs nobody in: the person's one click then yields exactly one code mail, and the
scanner got no session cookie.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, expect

from bench.recipient import (
    code_fetcher,
    code_mails,
    first_visit_code,
    first_visit_password_code,
    notification_link,
    returning,
)
from secmsg.shared import mongo
from tests.e2e.helpers import Platform, submit

pytestmark = pytest.mark.timeout(200)
DOCTOR = "doctor@acme.example"


async def test_recipient_path_pages_and_fields(platform: Platform,
                                                      browser: Browser) -> None:
    base = platform.procs["retrieve"].base_url
    subject = "Your test results"
    message_id = await submit(platform, sender=DOCTOR, to=["new@example.org"], subject=subject,
                              text="Dear patient, all clear.")
    link = base + await notification_link(platform.sink, "new@example.org", message_id)

    # The mail scanner: the link answers a page, sets no session, sends no code.
    async with httpx.AsyncClient(verify=False, timeout=60) as scanner:
        scanned = await scanner.get(link)
    assert scanned.status_code == 200 and "Email me a code" in scanned.text
    assert "secmsg_session" not in scanned.headers.get("set-cookie", "")
    assert 'type="password"' not in scanned.text  # nothing but the code before the first read

    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    walk = await first_visit_code(page, link, code_fetcher(platform.sink, "new@example.org"),
                                  subject)
    assert walk.pages == [f"/m/acme/{message_id}", f"/web/messages/{message_id}"]
    assert walk.fields == ["8-digit code"]
    assert len(code_mails(platform.sink, "new@example.org")) == 1  # the click's, not the scan's
    await expect(page.get_by_text("all clear")).to_be_visible()

    # Back from the same browser: the link opens the message, no page in between.
    again = await returning(await context.new_page(), link, subject)
    assert again.pages == [f"/web/messages/{message_id}"] and again.fields == []
    await context.close()
    await _without_scripts(platform, browser)
    await _password_and_code(platform, browser)


async def _without_scripts(platform: Platform, browser: Browser) -> None:
    """The code field is ready for autofill and paste; without scripts the same forms still
    reach the message (one page more)."""
    base = platform.procs["retrieve"].base_url
    message_id = await submit(platform, sender=DOCTOR, to=["plain@example.org"],
                              subject="No scripts here", text="Plain and simple.")
    link = base + await notification_link(platform.sink, "plain@example.org", message_id)
    context = await browser.new_context(ignore_https_errors=True, java_script_enabled=False)
    page = await context.new_page()
    await page.goto(link)
    code = page.get_by_label("8-digit code from the email")
    assert await code.get_attribute("autocomplete") == "one-time-code"
    assert await code.get_attribute("inputmode") == "numeric"
    fetch = code_fetcher(platform.sink, "plain@example.org")
    await page.get_by_role("button", name="Email me a code").click()
    await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    await page.get_by_label("8-digit code").fill(await fetch())
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="No scripts here")).to_be_visible()
    await context.close()


async def _password_and_code(platform: Platform, browser: Browser) -> None:
    """The tenant requires a password: the first visit creates it with the code, one step."""
    await platform.db[mongo.TENANTS].update_one(
        {"_id": "acme"}, {"$set": {"policy": {"signin": "password+code"}}})
    base = platform.procs["retrieve"].base_url
    message_id = await submit(platform, sender=DOCTOR, to=["other@example.org"],
                              subject="Your appointment", text="Monday at nine.")
    link = base + await notification_link(platform.sink, "other@example.org", message_id)
    context = await browser.new_context(ignore_https_errors=True)
    walk = await first_visit_password_code(
        await context.new_page(), link, code_fetcher(platform.sink, "other@example.org"),
        "Your appointment", "plum tractor seventeen")
    assert len(walk.pages) == 3 and walk.fields == ["8-digit code", "password"]
    await context.close()
