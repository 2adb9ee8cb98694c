"""Passkeys in headless Chromium with its virtual authenticator (CDP ``WebAuthn`` domain: a
CTAP2 platform authenticator with resident keys and user verification), against the four real
services. Nothing here posts to a route: the person clicks the pages' buttons.

retrieve runs with its public URL on ``https://localhost:<port>``: WebAuthn needs a domain as
the relying party id (an IP address is refused) and a secure context; Chromium accepts
localhost with the test's self-signed certificate.

Registration after sign-in, sign-in with the passkey alone under ``code`` and under
``password+code`` (the documented decision: a passkey satisfies every policy, no TOTP step),
a removed passkey no longer signs in, and a tenant with ``allow_passkeys: false`` refuses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from devstack.servers import NatsServer, free_port
from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.shared import mongo
from tests.e2e.helpers import Platform, eventually, submit
from tests.webmail.browser import enter_emailed_code, shot

pytestmark = pytest.mark.timeout(240)

BOB = "bob@example.org"


@pytest.fixture
async def localhost_platform(services: Callable[..., ServiceProc], env: dict[str, str],
                             nats_server: NatsServer, mongo_db: Any, sink: Sink,
                             tmp_path: Path) -> AsyncIterator[tuple[Platform, str]]:
    """store, notify and ingest as in ``platform``; retrieve public on https://localhost."""
    fast = {"SECMSG_NOTIFY_RETRY_BASE_S": "0.5", "SECMSG_NOTIFY_RETRY_MAX_S": "2"}
    procs = {name: services(name, **fast) for name in ("store", "notify", "ingest")}
    port = free_port()
    base = f"https://localhost:{port}"
    retrieve = ServiceProc("retrieve", {**env, **nats_server.service_env("retrieve")},
                           tmp_path / "retrieve-localhost.log", port, tls=True,
                           extra_env={"SECMSG_RETRIEVE_PUBLIC_URL": base,
                                      "SECMSG_RETRIEVE_INGEST_URL": procs["ingest"].base_url})
    retrieve.start()
    procs["retrieve"] = retrieve
    try:
        await create_tenant(mongo_db, tenant_id="acme", name="Acme Medical")
        key = await create_api_key(mongo_db, tenant_id="acme", label="passkeys")
        yield Platform(tenant="acme", api_key=key, db=mongo_db, sink=sink,
                       s3_data_dir=tmp_path, procs=procs, start_service=services), base
    finally:
        retrieve.stop()


async def with_authenticator(context: BrowserContext, page: Page) -> tuple[Any, str]:
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True}})
    return cdp, str(added["authenticatorId"])


async def sign_in_with_code(platform: Platform, page: Page, base: str) -> None:
    await page.goto(f"{base}/web/acme/signin")
    await page.get_by_label("Your email address").fill(BOB)
    await enter_emailed_code(page, platform, BOB)
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


async def sign_out(page: Page) -> None:
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def sign_in_with_passkey(page: Page, base: str) -> None:
    await page.goto(f"{base}/web/acme/signin")
    await page.get_by_role("button", name="Sign in with a passkey").click()


async def test_passkey_registration_and_sign_in(
        localhost_platform: tuple[Platform, str], browser: Browser) -> None:
    platform, base = localhost_platform
    await submit(platform, sender="doctor@acme.example", to=[BOB], subject="Your results",
                 text="All clear.")
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    cdp, authenticator = await with_authenticator(context, page)
    try:
        await sign_in_with_code(platform, page, base)
        # Registration, offered on the account page after sign-in.
        await page.get_by_role("link", name="Account").click()
        await page.get_by_role("link", name="Passkeys").click()
        await expect(page.get_by_role("heading", name="Passkeys")).to_be_visible()
        await expect(page.get_by_text("You have no passkey yet.")).to_be_visible()
        await page.get_by_label("Name it (optional)").fill("Test laptop")
        await page.get_by_role("button", name="Add a passkey").click()
        await expect(page.get_by_role("status")).to_contain_text("Passkey “Test laptop” added")
        await expect(page.get_by_role("row").filter(has_text="Test laptop")).to_be_visible()
        await shot(page, "passkeys-1-added")
        creds = (await cdp.send("WebAuthn.getCredentials",
                                {"authenticatorId": authenticator}))["credentials"]
        assert len(creds) == 1 and creds[0]["isResidentCredential"]
        stored = await platform.db[mongo.PASSKEYS].find_one({"email": BOB})
        assert stored is not None and stored["tenant_id"] == "acme"
        assert stored["credential_id"] == creds[0]["credentialId"].rstrip("=").replace(
            "+", "-").replace("/", "_")

        # Sign-in with the passkey alone: no address typed, no code, no password.
        await sign_out(page)
        await sign_in_with_passkey(page, base)
        await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
        await expect(page.get_by_text(BOB).first).to_be_visible()
        await expect(page.get_by_text("Your results")).to_be_visible()
        await shot(page, "passkeys-2-signed-in")

        # The policy asks for password+code: a passkey still satisfies it.
        await platform.db[mongo.TENANTS].update_one(
            {"_id": "acme"}, {"$set": {"policy": {"signin": "password+code"}}})
        await sign_out(page)
        await sign_in_with_passkey(page, base)
        await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
        audit = await eventually(
            lambda: platform.count(mongo.AUDIT, {"kind": "signin.succeeded",
                                                 "detail.method": "passkey"}, at_least=2),
            timeout=30, what="two passkey sign-ins in the audit trail")
        assert audit == 2

        # Removed: the authenticator still has it, the platform no longer accepts it.
        await page.goto(f"{base}/web/account/passkeys")
        await page.get_by_role("button", name="Remove Test laptop").click()
        await expect(page.get_by_role("status")).to_contain_text("Passkey removed")
        await sign_out(page)
        await sign_in_with_passkey(page, base)
        await expect(page.get_by_role("alert")).to_contain_text("Passkey: the sign-in details "
                                                                "are wrong")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        await context.close()


async def test_a_tenant_without_passkeys_refuses_them(
        localhost_platform: tuple[Platform, str], browser: Browser) -> None:
    platform, base = localhost_platform
    await submit(platform, sender="doctor@acme.example", to=[BOB], subject="Hello",
                 text="Hi.")
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await with_authenticator(context, page)
    try:
        await sign_in_with_code(platform, page, base)
        await page.goto(f"{base}/web/account/passkeys")
        await page.get_by_role("button", name="Add a passkey").click()
        await expect(page.get_by_role("status")).to_contain_text("added")
        await platform.db[mongo.TENANTS].update_one(
            {"_id": "acme"}, {"$set": {"policy": {"allow_passkeys": False}}})
        await page.goto(f"{base}/web/account/passkeys")
        await expect(page.get_by_text("this organisation does not use passkeys")).to_be_visible()
        await expect(page.get_by_role("button", name="Add a passkey")).to_have_count(0)
        await sign_out(page)
        await sign_in_with_passkey(page, base)
        await expect(page.get_by_role("alert")).to_contain_text("Passkey: the sign-in details "
                                                                "are wrong")
    finally:
        await context.close()
