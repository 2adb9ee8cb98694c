"""The agent sets itself up: from no token to a replaced placeholder in a real dovecot mailbox
with ``authorize`` + one run, against the four real services. The person approves in headless
Chromium the way they would: the printed link, the emailed code, the Allow button."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, expect

from devstack.imap import Dovecot
from tests.e2e.helpers import Platform, submit
from tests.toolbar.conftest import IMAP_PASSWORD, IMAP_USER
from tests.toolbar.helpers import Box
from tests.toolbar.test_agent import notification_for
from tests.webmail.browser import enter_emailed_code

pytestmark = pytest.mark.timeout(240)

SECRET_WORD = "pangolinharpsichord"


def toolbar(*args: str, config_dir: Path) -> list[str]:
    return [sys.executable, "-m", "secmsg.toolbar", *args, "--config-dir", str(config_dir)]


async def cli(*args: str, config_dir: Path,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, toolbar(*args, config_dir=config_dir), capture_output=True,
        text=True, timeout=timeout, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def approve_in_browser(browser: Browser, platform: Platform, url: str,
                             user_code: str) -> None:
    """What the person does with the printed link: sign in with the emailed code, Allow."""
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    try:
        await page.goto(url)
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.get_by_label("Your email address").fill(IMAP_USER)
        await enter_emailed_code(page, platform, IMAP_USER)
        await expect(page.get_by_role("heading", name="Connect a toolbar")).to_be_visible()
        await expect(page.get_by_label("Code shown by the toolbar")).to_have_value(user_code)
        await expect(page.get_by_text("secmsg toolbar agent on")).to_be_visible()
        await page.get_by_role("button", name="Allow").click()
        await expect(page.get_by_text("is connected")).to_be_visible()
    finally:
        await context.close()


async def test_authorize_then_one_run_replaces_the_placeholder(
        platform: Platform, dovecot: Dovecot, browser: Browser,
        tls_cert: tuple[Path, Path], tmp_path: Path) -> None:
    mid = await submit(platform, sender="doctor@acme.example", to=[IMAP_USER],
                       subject="Your results", text=f"The secret word is {SECRET_WORD}.")
    note = await notification_for(platform, mid)
    box = Box(dovecot)
    box.append(note)
    (placeholder,) = box.all()
    base = platform.procs["retrieve"].base_url
    # notify's public URL in the test stack is not the address retrieve listens on: keep the
    # link's path (organisation and message) and put the real server in front, as a
    # deployment's public URL would be.
    link = base + urlsplit(str(message_from_bytes(note)["X-Secure-Message-Url"])).path
    config_dir = tmp_path / "home" / ".config" / "secmsg-toolbar"
    password_file = tmp_path / "imap-password"
    password_file.write_text(IMAP_PASSWORD + "\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    before = await cli("status", config_dir=config_dir)
    assert before.returncode == 2 and "missing: run" in before.stdout

    authorizing = await asyncio.to_thread(
        subprocess.Popen, toolbar("authorize", "--link", link, "--ca-file", str(tls_cert[0]),
                "--imap-host", "127.0.0.1", "--imap-port", str(dovecot.port),
                "--imap-tls", "none", "--user", IMAP_USER,
                "--password-file", str(password_file), config_dir=config_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with authorizing as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            printed: list[str] = []
            while not any("Sign in there" in line for line in printed):
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, f"authorize ended early: {proc.stderr.read()}"
                printed.append(line)
            url = next(line.strip() for line in printed if line.strip().startswith("https://"))
            user_code = printed[-1].split("code", 1)[1].split()[0]
            assert url == f"{base}/device?user_code={user_code}"
            assert not config_dir.exists(), "nothing is stored before the person allows it"

            await approve_in_browser(browser, platform, url, user_code)
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "Connected." in out

    token_file = config_dir / "token.json"
    stored = json.loads(token_file.read_text())
    secret = stored["access_token"]
    assert secret.startswith("smt_") and stored["scopes"] == ["read"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert secret not in out + err
    saved = json.loads((config_dir / "config.json").read_text())
    assert saved["retrieve_url"] == base and saved["tenant_id"] == "acme"

    status = await cli("status", "--check", config_dir=config_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert secret not in status.stdout + status.stderr
    assert f"server:    {base} (organisation acme)" in status.stdout
    assert f"INBOX of {IMAP_USER} on 127.0.0.1:{dovecot.port}" in status.stdout
    assert f"present (id {stored['token_id']}, scopes read" in status.stdout
    assert "retrieve accepts the token" in status.stdout
    assert "last run:  never" in status.stdout

    # One run with no options at all: everything comes from what authorize kept.
    done = await cli("run", config_dir=config_dir, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{mid}: replaced" in done.stderr
    assert secret not in done.stdout + done.stderr
    try:
        (real,) = box.all()
        assert real != placeholder
        assert box.search("BODY", SECRET_WORD) == [real]
        assert box.search("HEADER", "X-Secure-Message-Id", '""') == []
    finally:
        box.close()

    after = await cli("status", config_dir=config_dir)
    assert "1 replaced" in after.stdout and "(exit 0)" in after.stdout


async def test_authorize_refuses_a_link_that_is_not_a_notification_link(
        tmp_path: Path) -> None:
    done = await cli("authorize", "--link", "http://secure.example/m/acme/x",
                     config_dir=tmp_path / "cfg")
    assert done.returncode == 2
    assert "--link must be the https://" in done.stderr
    assert not (tmp_path / "cfg").exists()
