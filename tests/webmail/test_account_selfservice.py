"""Account self-service clicked through in Chromium against the four real services (issue 14
item 3): a password offered after the first read and chosen, sessions listed with last use and
one signed out, the password changed (a wrong current one refused first), the authenticator set
up from its QR code with recovery codes, a recovery code standing in at sign-in, the
authenticator turned off with a fresh code (a wrong one refused first), and everywhere else
signed out.
"""

from __future__ import annotations

import time

import pyotp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from bench.recipient import code_fetcher, notification_link
from secmsg.shared import mongo
from tests.e2e.helpers import Platform, submit
from tests.webmail.browser import shot

pytestmark = pytest.mark.timeout(240)
DOCTOR = "doctor@acme.example"
ME = "erin@example.org"
FIRST = "plum tractor seventeen lanterns"
SECOND = "quiet harbour copper violin"


async def _password_sign_in(browser: Browser, base: str, password: str) -> tuple[
        BrowserContext, Page]:
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await page.goto(f"{base}/web/acme/signin")
    await page.get_by_label("Your email address").fill(ME)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    return context, page


async def test_account_self_service(platform: Platform, browser: Browser) -> None:
    await platform.db[mongo.TENANTS].update_one({"_id": "acme"},
                                                {"$set": {"policy": {"signin": "password"}}})
    base = platform.procs["retrieve"].base_url
    message_id = await submit(platform, sender=DOCTOR, to=[ME], subject="Your results",
                              text="All clear.")
    link = base + await notification_link(platform.sink, ME, message_id)

    # First read with an emailed code; the password is offered only on the message page.
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await page.goto(link)
    fetch = code_fetcher(platform.sink, ME)
    await page.get_by_role("button", name="Email me a code instead").click()
    await page.get_by_label("8-digit code").fill(await fetch())
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Your results")).to_be_visible()
    await page.get_by_role("link", name="choose a password").click()
    await expect(page.get_by_role("heading", name="Choose a password")).to_be_visible()
    assert await page.get_by_label("Current password").count() == 0  # none yet
    await page.get_by_label("New password").fill(FIRST)
    await page.get_by_role("button", name="Save the password").click()
    await expect(page.get_by_role("status")).to_contain_text("Password saved")
    await shot(page, "account-1-password-saved")

    # A second browser signs in with it: two sessions, each with its last use.
    other, other_page = await _password_sign_in(browser, base, FIRST)
    await expect(other_page.get_by_role("heading", name="Inbox")).to_be_visible()
    await page.reload()
    rows = page.locator("table").filter(has_text="Browsers signed in").locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.filter(has_text="(this browser)")).to_have_count(1)
    await expect(rows.first).to_contain_text("Chrome")
    await shot(page, "account-2-sessions")
    await page.get_by_role("button", name="Sign out Chrome").click()
    await expect(page.get_by_role("status")).to_contain_text("That browser is signed out")
    await expect(rows).to_have_count(1)
    await other_page.goto(f"{base}/web/inbox")
    await expect(other_page.get_by_role("heading", name="Sign in")).to_be_visible()
    await other.close()

    # Change the password: the current one is asked for, and checked.
    await page.get_by_role("link", name="Change your password").click()
    await page.get_by_label("Current password").fill("not my password at all")
    await page.get_by_label("New password").fill(SECOND)
    await page.get_by_role("button", name="Save the password").click()
    await expect(page.get_by_role("alert")).to_contain_text("current password is wrong")
    await page.get_by_label("Current password").fill(FIRST)
    await page.get_by_label("New password").fill(SECOND)
    await page.get_by_role("button", name="Save the password").click()
    await expect(page.get_by_role("status")).to_contain_text("Password saved")

    # The authenticator from its QR code; recovery codes shown once.
    await page.get_by_role("button", name="Set up an authenticator app").click()
    qr = page.get_by_role("img", name="QR code")
    await expect(qr).to_be_visible()
    assert (await qr.get_attribute("src") or "").startswith("data:image/svg+xml")
    await shot(page, "account-3-authenticator-qr")
    totp = pyotp.TOTP((await page.locator("#totp-secret").inner_text()).strip())
    step = int(time.time()) // 30
    await page.get_by_label("Code from the app").fill(totp.at(step * 30))
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = [c.strip() for c in await page.locator(".recovery-codes code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    await shot(page, "account-4-recovery-codes")
    await page.get_by_role("link", name="Done: back to your account").click()
    await expect(page.get_by_text("on (10 recovery codes left)")).to_be_visible()

    # A lost phone: a recovery code finishes the sign-in, once.
    phone_lost, lost_page = await _password_sign_in(browser, base, SECOND)
    await expect(lost_page.get_by_role("heading", name="One more step")).to_be_visible()
    await lost_page.get_by_label("Authenticator code").fill(codes[0])
    await lost_page.get_by_role("button", name="Continue").click()
    await expect(lost_page.get_by_role("heading", name="Inbox")).to_be_visible()
    await page.reload()
    await expect(page.get_by_text("on (9 recovery codes left)")).to_be_visible()

    # Turning the authenticator off takes a fresh code: a wrong one is refused.
    await page.get_by_label("Code from the app (or a recovery code)").fill("000000")
    await page.get_by_role("button", name="Turn the authenticator off").click()
    await expect(page.get_by_role("alert")).to_contain_text("wrong or already used")
    await page.get_by_label("Code from the app (or a recovery code)").fill(
        totp.at((step + 1) * 30))
    await page.get_by_role("button", name="Turn the authenticator off").click()
    await expect(page.get_by_role("status")).to_contain_text("authenticator app is off")
    await shot(page, "account-5-authenticator-off")

    # Sign out everywhere else: the lost-phone browser is out, this one stays.
    await page.get_by_role("button", name="Sign out everywhere else").click()
    await expect(page.get_by_role("status")).to_contain_text("Signed out everywhere else (1")
    await lost_page.goto(f"{base}/web/inbox")
    await expect(lost_page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto(f"{base}/web/inbox")
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    await phone_lost.close()
    await context.close()
