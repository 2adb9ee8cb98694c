"""Every webmail flow clicked through in headless Chromium, under each sign-in policy, against
the four real services (codes read from the real SMTP sink). Nothing here posts to a route:
the browser fills the rendered forms and presses their buttons, as a person does.

Per policy (``code``, ``password``, ``password+code``), one tenant setup and one person:
register (or first sign-in) from the notification link, reply, compose, sign out, reset the
password (policies with one), a signed-out visit to a message that goes to sign-in and back
(a wrong password first: the webmail's own page says so), authenticator enrolment, sign-in with
the authenticator, sign out. Then the pages a lost or curious visitor sees: the same neutral
sign-in page for an unknown and a known tenant, the webmail's 404 and bad-link pages with a way
back, and a ``next`` that points elsewhere ending on this site.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
from playwright.async_api import Browser, Page, Response, expect

from secmsg.shared import mongo
from tests.e2e.helpers import Platform, code_from_mail, eventually, submit
from tests.webmail.browser import shot
from tests.webmail.test_browser import body_link, notification_for

pytestmark = pytest.mark.timeout(240)

DOCTOR = "doctor@acme.example"
FIRST_PASSWORD = "plum tractor seventeen lanterns"
NEW_PASSWORD = "quiet harbour copper violin"
POLICIES = ["code", "password", "password+code"]


class Person:
    """One recipient in one browser context, with the mail and authenticator they hold."""

    def __init__(self, platform: Platform, page: Page, address: str, policy: str):
        self.platform, self.page, self.address, self.policy = platform, page, address, policy
        self.base = platform.procs["retrieve"].base_url
        self.password = FIRST_PASSWORD
        self.totp: pyotp.TOTP | None = None
        self._used_steps: set[int] = set()
        self._codes_seen = 0

    async def emailed_code(self) -> str:
        """The code from the newest code mail this person has not used yet."""
        mails = await eventually(
            lambda: self.platform._code_mails(self.address)[self._codes_seen:], timeout=30,
            what=f"a code mail to {self.address}")
        self._codes_seen += len(mails)
        code = code_from_mail(mails[-1])
        assert code
        return code

    def mark_codes_seen(self) -> None:
        self._codes_seen = len(self.platform._code_mails(self.address))

    def authenticator_code(self) -> str:
        """What the person's app shows: a 30-second step not used yet (each is single use)."""
        assert self.totp is not None
        current = int(time.time()) // 30
        step = next(s for s in (current, current + 1, current - 1) if s not in self._used_steps)
        self._used_steps.add(step)
        return self.totp.at(step * 30)

    async def shot(self, name: str) -> None:
        await shot(self.page, f"flow-{self.policy.replace('+', '-')}-{name}")


async def _setup(platform: Platform, browser: Browser, policy: str,
                 address: str) -> tuple[Person, str]:
    await platform.db[mongo.TENANTS].update_one({"_id": "acme"},
                                                {"$set": {"policy": {"signin": policy}}})
    await platform.db[mongo.TENANT_USERS].insert_one(
        {"_id": f"acme:{DOCTOR}", "tenant_id": "acme", "email": DOCTOR, "role": "sender",
         "created_at": datetime.now(UTC), "created_by": "test"})
    context = await browser.new_context(ignore_https_errors=True)
    person = Person(platform, await context.new_page(), address, policy)
    message_id = await submit(platform, sender=DOCTOR, to=[address],
                              subject="Your test results", text="Dear patient, all clear.")
    return person, message_id


async def register_from_link(person: Person, mail: Any) -> None:
    """The notification link -> (code or code + password) -> the message."""
    page = person.page
    await page.goto(person.base + body_link(mail))
    await expect(page.get_by_role("heading", name="You have a secure message")).to_be_visible()
    await expect(page.get_by_text("Acme Medical").first).to_be_visible()  # the genuine link
    await person.shot("1-link")
    if person.policy == "code":  # the first sign-in is the registration; the code in place
        await expect(page.get_by_text(person.address).first).to_be_visible()
        await page.get_by_role("button", name="Email me a code").click()
        await expect(page.get_by_role("status")).to_contain_text("We sent an 8-digit code")
        await page.get_by_label("8-digit code from the email").fill(await person.emailed_code())
    else:
        await expect(page.get_by_label("Your email address")).to_have_value(person.address)
        await page.get_by_role("button", name="Create my account").click()
        await expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
        await page.get_by_label("8-digit code from the email").fill(await person.emailed_code())
        await page.get_by_label("Choose a password").fill(person.password)
        await person.shot("2-register")
        await page.get_by_role("button", name="Create my account and open").click()
    await expect(page.get_by_role("heading", name="Your test results")).to_be_visible()
    await expect(page.get_by_text("all clear")).to_be_visible()


async def reply_and_compose(person: Person, message_id: str) -> list[str]:
    page = person.page
    sent: list[str] = []
    await page.get_by_role("link", name="Reply", exact=True).click()
    await expect(page.get_by_label("To")).to_have_value(DOCTOR)
    await expect(page.get_by_label("Subject")).to_have_value("Re: Your test results")
    await page.get_by_label("Message").fill("Thank you, doctor.")
    await page.get_by_role("button", name="Send securely").click()
    await expect(page.get_by_role("heading", name="Your secure message was sent")).to_be_visible()
    sent.append(str(await page.get_by_role("link", name="Delivery slip").get_attribute("href")))
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("To").fill(DOCTOR)
    await page.get_by_label("Subject").fill("A question")
    await page.get_by_label("Message").fill("May I call you on Monday?")
    await person.shot("3-compose")
    await page.get_by_role("button", name="Send securely").click()
    await expect(page.get_by_role("heading", name="Your secure message was sent")).to_be_visible()
    sent.append(str(await page.get_by_role("link", name="Delivery slip").get_attribute("href")))
    return [href.rsplit("/", 1)[-1] for href in sent]


async def sign_out(person: Person) -> None:
    page = person.page
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.url == f"{person.base}/web/acme/signin"
    assert await page.title() == "Sign in · Secure messages"  # neutral before sign-in


async def reset_password(person: Person) -> None:
    """Sign-in page -> Forgot your password? -> code + new password -> signed in."""
    page = person.page
    await page.get_by_label("Your email address").fill(person.address)
    person.mark_codes_seen()
    await page.get_by_role("button", name="Forgot your password?").click()
    await expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await page.get_by_label("8-digit code from the email").fill(await person.emailed_code())
    await page.get_by_label("New password").fill(NEW_PASSWORD)
    await person.shot("4-reset")
    await page.get_by_role("button", name="Save the new password and open").click()
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    person.password = NEW_PASSWORD


async def sign_in(person: Person, *, wrong_password_first: bool = False) -> None:
    """From the sign-in page, as the tenant's policy asks (authenticator step if enrolled)."""
    page = person.page
    await page.get_by_label("Your email address").fill(person.address)
    person.mark_codes_seen()
    if person.policy == "password":
        if wrong_password_first:
            await page.get_by_label("Password").fill(FIRST_PASSWORD + " wrong")
            async with page.expect_response(lambda r: r.url.endswith("/web/acme/verify")) \
                    as answer:
                await page.get_by_role("button", name="Sign in", exact=True).click()
            response: Response = await answer.value
            assert response.status == 401
            assert response.headers["content-type"].startswith("text/html")
            await expect(page.get_by_role("alert")).to_be_visible()
            await expect(page.get_by_label("Your email address")).to_have_value(person.address)
            await person.shot("5-wrong-password")
        await page.get_by_label("Password").fill(person.password)
        await page.get_by_role("button", name="Sign in", exact=True).click()
    else:
        await page.get_by_role("button", name="Email me a code").click()
        await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        if person.policy == "password+code":
            if wrong_password_first:
                await page.get_by_label("Password").fill(FIRST_PASSWORD + " wrong")
                await page.get_by_label("8-digit code").fill("00000000")
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.get_by_role("alert")).to_be_visible()
                await person.shot("5-wrong-password")
            await page.get_by_label("Password").fill(person.password)
        await page.get_by_label("8-digit code").fill(await person.emailed_code())
        await page.get_by_role("button", name="Sign in").click()
    if person.totp is not None:
        await expect(page.get_by_role("heading", name="One more step")).to_be_visible()
        await page.get_by_label("Authenticator code").fill(person.authenticator_code())
        await person.shot("7-totp")
        await page.get_by_role("button", name="Continue").click()


async def enrol_authenticator(person: Person) -> None:
    page = person.page
    await page.get_by_role("link", name="Account").click()
    await page.get_by_role("button", name="Set up an authenticator app").click()
    secret = (await page.locator("#totp-secret").inner_text()).strip()
    person.totp = pyotp.TOTP(secret)
    await page.get_by_label("Code from the app").fill(person.authenticator_code())
    await person.shot("6-authenticator")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("status")).to_contain_text("Authenticator app set up")
    await expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()


@pytest.mark.parametrize("policy", POLICIES)
async def test_every_flow_in_the_browser(platform: Platform, browser: Browser,
                                         policy: str) -> None:
    address = f"pat.{policy.replace('+', '-')}@example.org"
    person, first = await _setup(platform, browser, policy, address)
    page = person.page

    # Register from the notification link, then reply and write a new message.
    await register_from_link(person, await notification_for(platform, address, first))
    reply_id, new_id = await reply_and_compose(person, first)
    reply = await notification_for(platform, DOCTOR, reply_id)
    assert reply["Subject"] == "Re: Your test results"
    assert (await notification_for(platform, DOCTOR, new_id))["Subject"] == "A question"
    await sign_out(person)

    if policy != "code":  # a forgotten password: reset with an emailed code, signed in
        await reset_password(person)
        await sign_out(person)

    # Signed out, the message's address leads to sign-in, then back to the message.
    await page.goto(f"{person.base}/web/messages/{first}")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.url.startswith(f"{person.base}/web/acme/signin?next=")
    await sign_in(person, wrong_password_first=policy != "code")
    await expect(page.get_by_role("heading", name="Your test results")).to_be_visible()
    assert page.url == f"{person.base}/web/messages/{first}"

    # An authenticator app, then required at the next sign-in (back to the inbox this time).
    await enrol_authenticator(person)
    await sign_out(person)
    await page.goto(f"{person.base}/web/inbox")
    await sign_in(person)
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    assert page.url == f"{person.base}/web/inbox"
    await expect(page.get_by_role("link", name="Your test results")).to_be_visible()
    await person.shot("8-inbox")
    await sign_out(person)

    account = await platform.db[mongo.ACCOUNTS].find_one({"email_lower": address})
    assert account and account["totp_secret_sealed"]
    assert bool(account.get("password_hash")) == (policy != "code")
    await page.context.close()


async def test_lost_visitors_get_neutral_and_helpful_pages(platform: Platform,
                                                           browser: Browser) -> None:
    await platform.db[mongo.TENANTS].update_one(
        {"_id": "acme"}, {"$set": {"branding": {"primary_color": "#0b6e4f"}}})
    base = platform.procs["retrieve"].base_url
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()

    # The same neutral sign-in page whether the tenant exists or not.
    seen = []
    for tenant in ("acme", "no-such-tenant"):
        response = await page.goto(f"{base}/web/{tenant}/signin")
        assert response and response.status == 200
        await shot(page, f"lost-signin-{tenant}")
        main = await page.locator("main").inner_text()
        seen.append((await page.title(), main, await page.locator("footer").inner_text()))
    assert seen[0] == seen[1]
    assert "Acme" not in " ".join(seen[0])

    # Pages that do not exist, and links that are not valid: the webmail's pages, HTML.
    for path, status, heading in (
            ("/web/no/such/page", 404, "Page not found"),
            ("/m/acme/not-a-message-id", 404, "This link is not valid"),
            ("/web/acme/signin?next=" + "x" * 400, 422, "The form could not be read")):
        response = await page.goto(base + path)
        assert response and response.status == status, path
        assert response.headers["content-type"].startswith("text/html")
        await expect(page.get_by_role("heading", name=heading)).to_be_visible()
        await expect(page.get_by_text("open the link in your notification email")).to_be_visible()
    await shot(page, "lost-bad-link")

    # A next that points to another site ends on this one after sign-in.
    bob = "bob@example.org"
    first = await submit(platform, sender=DOCTOR, to=[bob], subject="Hello",
                         text="Hello Bob")
    await notification_for(platform, bob, first)
    await page.goto(f"{base}/web/acme/signin?next=https://evil.example/")
    person = Person(platform, page, bob, "code")
    await sign_in(person)
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    assert page.url == f"{base}/web/inbox"

    # Signed in, the not-found page leads back to the inbox; signed out, to sign-in.
    await page.goto(f"{base}/web/messages/{'0' * 32}/nothing-here")
    await expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    await page.get_by_role("link", name="Back to your inbox").click()
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    response = await page.goto(f"{base}/web/nothing")
    assert response and response.status == 404
    await page.get_by_role("link", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert re.fullmatch(rf"{re.escape(base)}/web/acme/signin", page.url)
    await context.close()
