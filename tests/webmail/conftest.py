"""The webmail runs inside retrieve: reuse retrieve's in-process app and seeding fixtures.
Browser tests share one Chromium for the whole session (a fresh context per person)."""

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.retrieve.conftest import app, blobs, make_app, seeder  # noqa: F401
from tests.webmail.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    # Pages answer after real work (Argon2, ingest, other services) on two shared cores: wait
    # longer than Playwright's 5 s before calling an expected page missing.
    expect.set_options(timeout=15_000)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()
