"""Driving the webmail forms over HTTP, as a browser without JavaScript would."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx

from devstack.smtp_sink import Sink
from tests.retrieve.helpers import BOB, TENANT, last_code

CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "the page has no CSRF field"
    return m.group(1)


async def web_sign_in(client: httpx.AsyncClient, sink: Sink, message_id: str, *,
                      tenant_id: str = TENANT, email: str = BOB) -> httpx.Response:
    """Link page -> email form -> emailed code -> the message page."""
    page = await client.get(f"/m/{tenant_id}/{message_id}")
    assert page.status_code == 200, page.text
    r = await client.post(f"/web/{tenant_id}/signin", data={
        "csrf": csrf_of(page.text), "email": email, "next": f"/web/messages/{message_id}"})
    assert r.status_code == 200, r.text
    r = await client.post(f"/web/{tenant_id}/verify", data={
        "csrf": csrf_of(r.text), "email": email, "code": last_code(sink, email),
        "next": f"/web/messages/{message_id}"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/web/messages/{message_id}"
    return await client.get(r.headers["location"])


class FormAudit(HTMLParser):
    """Collects form controls and labels, to check every visible control is labelled."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.landmarks: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "textarea", "select") and a.get("type") not in ("hidden",
                                                                            "submit"):
            self.controls.append(a)
        if tag == "label" and a.get("for"):
            self.label_for.add(str(a["for"]))
        if tag in ("main", "header", "footer", "nav"):
            self.landmarks.add(tag)

    def unlabelled(self) -> list[dict[str, str | None]]:
        return [c for c in self.controls
                if c.get("id") not in self.label_for and not c.get("aria-label")]


def audit_form(html: str) -> FormAudit:
    p = FormAudit()
    p.feed(html)
    return p
