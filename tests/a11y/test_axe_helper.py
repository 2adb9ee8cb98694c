"""tests/axe.py loads axe-core into Chromium and reports what it finds: a page with known
faults gets them named, a clean page gets none (so a 0 elsewhere means something)."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.axe import axe_html, axe_version

CLEAN = """<!DOCTYPE html><html lang="en"><head><title>Fine</title></head>
<body><main><h1>Fine</h1><p>Readable text.</p><img src="https://x.example/a.png" alt="A">
</main></body></html>"""
FAULTY = """<!DOCTYPE html><html><head><title>Bad</title></head>
<body><main><h1>Bad</h1><p style="color:#aaa;background:#fff">Faint text.</p>
<img src="https://x.example/a.png"><a href="https://x.example/"></a></main></body></html>"""


async def test_axe_names_the_faults_of_a_faulty_page(browser: Browser) -> None:
    found = {v["id"] for v in await axe_html(browser, FAULTY)}
    assert {"html-has-lang", "image-alt", "link-name", "color-contrast"} <= found


async def test_axe_finds_nothing_on_a_clean_page(browser: Browser) -> None:
    assert await axe_html(browser, CLEAN) == []
    assert axe_version().startswith("4.")
