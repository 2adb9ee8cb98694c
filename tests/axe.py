"""axe-core in a real Chromium page: the accessibility check for webmail pages and for the
notification HTML (the goal is 0 violations).

The engine is the ``axe.min.js`` that the PyPI package ``axe-playwright-python`` ships (a dev
dependency; its Python wrapper is not used). It is evaluated in the page through the
DevTools protocol, so a page's Content-Security-Policy does not stop it, and run with axe's
default rule set (WCAG 2.x A and AA plus axe's best practices).

    from tests.axe import axe_violations, describe
    violations = await axe_violations(page)
    assert violations == [], describe(violations)
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Route

# axe's own options: https://github.com/dequelabs/axe-core/blob/develop/doc/API.md#options-parameter
_RUN = """async ([context, options]) => {
  const result = await window.axe.run(context || document, options || {});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => ({target: n.target, summary: n.failureSummary, html: n.html})),
  }));
}"""


@cache
def axe_source() -> str:
    return (resources.files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


def axe_version() -> str:
    head = axe_source()[:40]
    return head.split("axe v", 1)[1].split()[0] if "axe v" in head else "unknown"


async def axe_violations(page: Page, *, context: str | None = None,
                         options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """axe's violations on ``page`` as it is now (``context``: a CSS selector to limit it)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(axe_source())
    violations: list[dict[str, Any]] = await page.evaluate(_RUN, [context, options])
    return violations


async def _offline(route: Route) -> None:
    await route.abort()  # a rendered email's remote images (a logo) are not fetched here


async def axe_html(browser: Browser, html: str, *, color_scheme: str = "light",
                   width: int = 1024, screenshot: Path | None = None) -> list[dict[str, Any]]:
    """axe's violations on a standalone HTML document (an email body), in a fresh context with
    the given ``prefers-color-scheme`` and viewport width; remote resources are refused. With
    ``screenshot``, the whole page is saved there as PNG first."""
    context = await browser.new_context(
        color_scheme=color_scheme,  # type: ignore[arg-type]  # "light" | "dark"
        viewport={"width": width, "height": 900}, java_script_enabled=True)
    try:
        page = await context.new_page()
        await page.route("**/*", _offline)
        await page.set_content(html, wait_until="load")
        if screenshot is not None:
            await page.screenshot(path=str(screenshot), full_page=True)
        return await axe_violations(page)
    finally:
        await context.close()


def describe(violations: list[dict[str, Any]]) -> str:
    """A readable list for an assertion message: rule, impact, help and the first targets."""
    lines = []
    for v in violations:
        targets = "; ".join(" ".join(map(str, n["target"])) for n in v["nodes"][:3])
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} -- {targets}")
        lines.extend(f"    {n['summary']}" for n in v["nodes"][:1])
    return "\n".join(lines)
