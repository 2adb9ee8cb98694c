"""The webmail in a real browser (headless Chromium via Playwright) against the real platform.

One journey, as people would walk it: a recipient opens the link from the notification mail,
signs in with the emailed code, reads the message, downloads the attachment and sends a secure
reply with an attachment; the reply reaches ingest and its notification reaches the sender, who
signs in from it, composes a new message and reads the delivery slip of the first one. A
screenshot of every step lands in test-artifacts/screenshots/.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, expect

from devstack.services import ServiceProc
from secmsg.shared import mongo
from tests.e2e.helpers import Platform, code_from_mail, eventually, submit
from tests.webmail.browser import shot

pytestmark = pytest.mark.timeout(280)

DOCTOR = "doctor@acme.example"
BOB = "bob@example.org"


def notifications(platform: Platform, address: str) -> list[Any]:
    return [c.message for c in platform.sink.handler.for_recipient(address)
            if c.message["X-Secure-Message-Id"]]


async def notification_for(platform: Platform, address: str, message_id: str) -> Any:
    found = await eventually(
        lambda: [m for m in notifications(platform, address)
                 if m["X-Secure-Message-Id"] == message_id],
        timeout=60, what=f"notification of {message_id} to {address}")
    return found[0]


def body_link(mail: Any) -> str:
    """Path and query of the link in the notification's text body (``?r=`` names the
    recipient, which is what lets the page show the tenant's name before sign-in)."""
    text = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    link = next(w for w in text.get_content().split() if "/m/" in w and "?r=" in w)
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


async def sign_in_with_code(platform: Platform, page: Page, address: str,
                            prefix: str) -> None:
    """From the notification link (it names the recipient): one click, then the code in
    place; a complete code opens the message (bench.recipient walks the same path)."""
    before = len(platform._code_mails(address))
    await expect(page.get_by_role("button", name="Email me a code")).to_be_visible()
    named = await page.get_by_label("Your email address").count() == 0
    if not named:  # a link without the recipient hint (e.g. the toolbar header's): the address
        await page.get_by_label("Your email address").fill(address)
    await shot(page, f"{prefix}-1-link-page")
    await page.get_by_role("button", name="Email me a code").click()
    if named:
        await expect(page.get_by_role("status")).to_contain_text("We sent an 8-digit code")
    else:
        await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    mails = await eventually(lambda: platform._code_mails(address)[before:], timeout=30,
                             what=f"sign-in code for {address}")
    code = code_from_mail(mails[-1])
    assert code
    await shot(page, f"{prefix}-2-code")
    if named:
        await page.get_by_label("8-digit code from the email").fill(code)
    else:
        await page.get_by_label("8-digit code").fill(code)
        await page.get_by_role("button", name="Sign in").click()


async def test_recipient_reads_downloads_replies_and_sender_sees_slip(
        platform: Platform, browser: Browser, tmp_path: Path) -> None:
    # The platform fixture starts retrieve before ingest; this retrieve knows ingest's URL.
    web: ServiceProc = platform.start_service(
        "retrieve", SECMSG_RETRIEVE_INGEST_URL=platform.ingest_url)
    await platform.db[mongo.TENANT_USERS].insert_one(
        {"_id": f"acme:{DOCTOR}", "tenant_id": "acme", "email": DOCTOR, "role": "sender",
         "created_at": datetime.now(UTC), "created_by": "test"})
    await platform.db[mongo.TENANTS].update_one(
        {"_id": "acme"}, {"$set": {"branding": {"primary_color": "#0b6e4f"}}})
    report = b"%PDF-1.4 lab report " + bytes(range(256)) * 40
    first = await submit(platform, sender=DOCTOR, to=[BOB], subject="Your lab results",
                         text="Dear Bob, your results are attached.",
                         html='<p>Dear <b>Bob</b>, your results are attached.</p>'
                              '<img src="https://tracker.example/pixel.gif" alt="">'
                              '<script>document.title="owned"</script>',
                         attachments={"results.pdf": report})

    # 1. The link from the notification mail (its path, on this retrieve).
    mail = await notification_for(platform, BOB, first)
    link = web.base_url + body_link(mail)  # the body's link, which names its recipient
    bob = await browser.new_context(ignore_https_errors=True, accept_downloads=True)
    page = await bob.new_page()
    await page.goto(link)
    await expect(page.get_by_role("heading", name="You have a secure message")).to_be_visible()
    await expect(page.get_by_text("Acme Medical").first).to_be_visible()
    await sign_in_with_code(platform, page, BOB, "recipient")

    # 2. The message opens directly, sanitised, remote image held back.
    await expect(page.get_by_role("heading", name="Your lab results")).to_be_visible()
    await expect(page.get_by_text("remote image not shown")).to_be_visible()
    assert await page.title() != "owned"
    assert await page.locator("img[src^='https://']").count() == 0
    await shot(page, "recipient-3-message")

    # 3. Download the attachment through the streamed download.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download results.pdf").click()
    download = await info.value
    target = tmp_path / "results.pdf"
    await download.save_as(target)
    assert target.read_bytes() == report

    # 4. Inbox shows it (read).
    await page.get_by_role("link", name="Inbox").click()
    await expect(page.get_by_role("link", name="Your lab results")).to_be_visible()
    await shot(page, "recipient-4-inbox")

    # 5. Secure reply with an attachment.
    await page.get_by_role("link", name="Your lab results").click()
    await page.get_by_role("link", name="Reply", exact=True).click()
    await expect(page.get_by_label("To")).to_have_value(DOCTOR)
    await expect(page.get_by_label("Subject")).to_have_value("Re: Your lab results")
    await page.get_by_label("Message").fill("Thank you, doctor. My questions are attached.")
    questions = tmp_path / "questions.txt"
    questions.write_bytes(b"1. What does this value mean?\n" * 100)
    await page.get_by_label("Attachments").set_input_files(str(questions))
    await shot(page, "recipient-5-reply")
    await page.get_by_role("button", name="Send securely").click()
    await expect(page.get_by_role("heading", name="Your secure message was sent")).to_be_visible()
    await shot(page, "recipient-6-sent")
    slip_href = await page.get_by_role("link", name="Delivery slip").get_attribute("href")
    assert slip_href
    reply_id = slip_href.rsplit("/", 1)[-1]

    # The reply went through ingest (stored as Bob's message) and notified the doctor.
    reply_mail = await notification_for(platform, DOCTOR, reply_id)
    assert reply_mail["Subject"] == "Re: Your lab results"
    stored = await eventually(lambda: platform.db[mongo.MESSAGES].find_one({"_id": reply_id}),
                              timeout=30, what="the reply stored")
    assert stored["sender"].lower() == BOB and stored["attachment_count"] == 1

    # An external recipient may not write to strangers: ingest refuses, its reason is shown.
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("To").fill("stranger@elsewhere.example")
    await page.get_by_label("Message").fill("Hello stranger")
    await page.get_by_role("button", name="Send securely").click()
    await expect(page.get_by_role("heading", name="Your message was not sent")).to_be_visible()
    await expect(page.get_by_role("alert")).not_to_be_empty()
    await expect(page.get_by_label("Message")).to_have_value("Hello stranger")
    await shot(page, "recipient-7-refused")
    await bob.close()

    # 6. The doctor signs in from the reply's notification, composes, and reads the slip.
    doc = await browser.new_context(ignore_https_errors=True)
    page = await doc.new_page()
    await page.goto(web.base_url + urlsplit(reply_mail["X-Secure-Message-Url"]).path)
    await sign_in_with_code(platform, page, DOCTOR, "sender")
    await expect(page.get_by_role("heading", name="Re: Your lab results")).to_be_visible()
    await expect(page.get_by_text("My questions are attached")).to_be_visible()

    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("To").fill("carol@example.org")
    await page.get_by_label("Subject").fill("Appointment")
    await page.get_by_label("Message").fill("Please come in on Monday.")
    await page.get_by_role("button", name="Send securely").click()
    await expect(page.get_by_role("heading", name="Your secure message was sent")).to_be_visible()
    href = await page.get_by_role("link", name="Delivery slip").get_attribute("href")
    assert href
    await notification_for(platform, "carol@example.org", href.rsplit("/", 1)[-1])

    await page.get_by_role("link", name="Sent").click()
    await page.get_by_role("link", name="Your lab results").click()
    await expect(page.get_by_role("heading", name="Delivery slip")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=BOB)

    async def slip_shows_sent() -> bool:
        # store records notify's notification.sent (and retrieve's download) a moment after
        # the fact (batched under load): reload the slip as a person would until it says so.
        text = await row.inner_text()
        if "queued" in text or "results.pdf" not in text:
            await page.reload()
            return False
        return True

    await eventually(slip_shows_sent, timeout=30, what="the slip to show the notification sent")
    await expect(row).to_contain_text("sent")
    await expect(row).not_to_contain_text("not yet")  # Bob opened it
    # ... and downloaded the attachment: the slip names it.
    await expect(row).to_contain_text("Downloaded")
    await expect(row.get_by_role("cell").filter(has_text="results.pdf")).to_be_visible()
    await shot(page, "sender-3-slip")
    await doc.close()


async def test_new_recipient_registers_from_the_notification_link(
        platform: Platform, browser: Browser) -> None:
    """Issue 5's ≈20-second flow: link (address already known from the link) -> one click ->
    emailed code + a password -> the message: one code field and one password field, nothing
    else."""
    await platform.db[mongo.TENANTS].update_one({"_id": "acme"},
                                                {"$set": {"policy": {"signin": "password"}}})
    carol = "carol.new@example.org"
    first = await submit(platform, sender=DOCTOR, to=[carol], subject="Your appointment",
                         text="Dear Carol, see you on Monday.")
    mail = await notification_for(platform, carol, first)
    web = platform.procs["retrieve"]
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    # The link in the notification's body (not the toolbar header) names its recipient (?r=),
    # so the page already knows the address: the person types nothing there.
    await page.goto(web.base_url + body_link(mail))
    await expect(page.get_by_role("heading", name="You have a secure message")).to_be_visible()

    filled: list[str] = []
    await expect(page.get_by_label("Your email address")).to_have_value(carol)
    await shot(page, "register-1-link-page")
    before = len(platform._code_mails(carol))
    await page.get_by_role("button", name="Create my account").click()
    await expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    await expect(page.get_by_text("12 to 128 characters")).to_be_visible()  # rules up front
    # The form asks for exactly two things: the emailed code and the password.
    inputs = page.locator("main form input:not([type=hidden])")
    await expect(inputs).to_have_count(2)
    mails = await eventually(lambda: platform._code_mails(carol)[before:], timeout=30,
                             what=f"registration code for {carol}")
    code = code_from_mail(mails[-1])
    assert code

    # A guessable password is refused, with its reason tied to the field.
    await page.get_by_label("8-digit code from the email").fill(code)
    await page.get_by_label("Choose a password").fill("password1234")
    await page.get_by_role("button", name="Create my account and open").click()
    alert = page.locator("#password-error")
    await expect(alert).to_contain_text("breached")
    await expect(page.get_by_label("Choose a password")).to_have_attribute(
        "aria-describedby", "password-error password-rules")
    await shot(page, "register-2-weak-password")

    await expect(page.get_by_label("8-digit code from the email")).to_have_value(code)
    filled.append("code")
    await page.get_by_label("Choose a password").fill("plum tractor seventeen lanterns")
    filled.append("password")
    await shot(page, "register-3-code-and-password")
    await page.get_by_role("button", name="Create my account and open").click()
    await expect(page.get_by_role("heading", name="Your appointment")).to_be_visible()
    await expect(page.get_by_text("see you on Monday")).to_be_visible()
    await shot(page, "register-4-message")
    assert filled == ["code", "password"]  # issue 3's target: one code, one password
    account = await platform.db[mongo.ACCOUNTS].find_one({"email_lower": carol})
    assert account and account["password_hash"].startswith("$argon2id$")
    await context.close()
