"""Headless Chromium for the webmail's browser tests: how it is launched here, screenshots."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page

from tests.e2e.helpers import Platform, code_from_mail, eventually

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"  # Playwright's own browser download does not work here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def enter_emailed_code(page: Page, platform: Platform, address: str) -> None:
    """On a sign-in page with the address filled in: "Email me a code", read the code from
    the mail that comes (not an earlier one), enter it and sign in."""
    seen = len(platform._code_mails(address))
    await page.get_by_role("button", name="Email me a code").click()
    mails = await eventually(lambda: platform._code_mails(address)[seen:], timeout=30,
                             what=f"the sign-in code mail to {address}")
    code = code_from_mail(mails[-1])
    assert code, "no code in the sign-in mail"
    await page.get_by_label("8-digit code").fill(code)
    await page.get_by_role("button", name="Sign in").click()
