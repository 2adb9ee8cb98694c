"""What the webmail answers a browser that goes off the happy path (in-process, real servers):
forms that post to their own tenant under every sign-in policy, the same neutral sign-in page
for unknown and known tenants, the webmail's own HTML error pages instead of JSON, and a
signed-out visit sent to sign in and back -- never to another site."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.retrieve.accounts_helpers import set_policy
from tests.retrieve.helpers import BOB, TENANT, Running, Seeder, last_code
from tests.webmail.helpers import csrf_of, web_sign_in

UNKNOWN = "nosuch-tenant"


class _Targets(HTMLParser):
    """Every place a form on the page posts to (``action`` and buttons' ``formaction``)."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("method") == "post":
            self.targets.append(str(a.get("action")))
        if tag == "button" and a.get("formaction") is not None:
            self.targets.append(str(a.get("formaction")))


def _post_targets(html: str) -> list[str]:
    p = _Targets()
    p.feed(html)
    return p.targets


@pytest.mark.parametrize("policy", ["code", "password", "password+code"])
async def test_every_sign_in_form_posts_to_its_own_tenant(app: Running, seeder: Seeder,
                                                          mongo_db: Any, policy: str) -> None:
    await set_policy(mongo_db, signin=policy)
    msg = await seeder.message()
    for path in (f"/web/{TENANT}/signin", f"/m/{TENANT}/{msg.message_id}"):
        r = await app.client.get(path)
        assert r.status_code == 200
        targets = _post_targets(r.text)
        assert targets, path
        for target in targets:  # the old password form posted to /web//verify
            assert re.fullmatch(rf"/web/{TENANT}/(signin|verify|passkey)", target), (
                policy, target)
    if policy == "password":
        assert f'action="/web/{TENANT}/verify"' in r.text


def _normalised(html: str, tenant_id: str) -> str:
    html = re.sub(r'name="csrf" value="[0-9a-f]{64}"', 'name="csrf" value=""', html)
    return html.replace(f"/web/{tenant_id}/", "/web/TENANT/").replace(
        f"/m/{tenant_id}/", "/m/TENANT/")


async def test_unknown_and_known_tenants_get_the_same_neutral_sign_in_page(
        app: Running, seeder: Seeder, mongo_db: Any) -> None:
    await mongo_db[mongo.TENANTS].update_one({"_id": TENANT}, {"$set": {
        "branding": {"primary_color": "#0b6e4f"}, "footer": "Sent by ACME Medical"}})
    stranger = uuid.uuid4().hex  # a message id nobody was sent
    pairs = [(f"/web/{TENANT}/signin", f"/web/{UNKNOWN}/signin"),
             (f"/m/{TENANT}/{stranger}", f"/m/{UNKNOWN}/{stranger}")]
    for known_path, unknown_path in pairs:
        known, unknown = await app.client.get(known_path), await app.client.get(unknown_path)
        assert known.status_code == unknown.status_code == 200
        assert _normalised(known.text, TENANT) == _normalised(unknown.text, UNKNOWN)
        assert "ACME" not in known.text and "/web/brand/" not in known.text
    assert "<title>Sign in · Secure messages</title>" in known.text

    # Nor does the tenant stylesheet say more without a link to one of the tenant's messages.
    assert (await app.client.get(f"/web/brand/{TENANT}.css")).text == ""
    assert (await app.client.get(f"/web/brand/{TENANT}.css?m={stranger}")).text == ""

    # Without its recipient hint, a real message's link page is the same neutral page.
    msg = await seeder.message()
    real = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    assert _normalised(real.text, TENANT).replace(msg.message_id, stranger) == \
        _normalised(unknown.text, UNKNOWN)
    # The genuine link (the notification's, with the keyed recipient hint) shows who sent it:
    # name, footer and colour.
    hint = app.deps.keyring.recipient_hint(TENANT, msg.message_id, "bob@example.org")
    assert (await app.client.get(f"/web/brand/{TENANT}.css?m={stranger}&r={hint}")).text == ""
    real = await app.client.get(f"/m/{TENANT}/{msg.message_id}", params={"r": hint})
    assert "<title>You have a secure message · ACME Medical</title>" in real.text
    assert "Sent by ACME Medical" in real.text
    css = re.search(r'href="(/web/brand/[^"]+)"', real.text)
    assert css and "#0b6e4f" in (await app.client.get(css.group(1).replace("&amp;", "&"))).text


def _is_page(r: Any, status: int, heading: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert f"<h1>{heading}</h1>" in r.text, r.text


async def test_bad_addresses_and_fields_get_the_webmail_error_page(
        app: Running, seeder: Seeder, sink: Sink) -> None:
    msg = await seeder.message()
    signed_out = {
        "/web/no/such/page": (404, "Page not found"),
        "/web/inbox/extra": (404, "Page not found"),
        "/m/acme": (404, "Page not found"),
        f"/m/{TENANT}/not-a-message-id": (404, "This link is not valid"),
        f"/m/{TENANT}/{msg.message_id}x": (404, "This link is not valid"),
        f"/m/bad%20tenant/{msg.message_id}": (404, "This link is not valid"),
        f"/web/{TENANT}/signin?next=" + "x" * 301: (422, "The form could not be read"),
    }
    for path, (status, heading) in signed_out.items():
        r = await app.client.get(path)
        _is_page(r, status, heading)
        assert "open the link in your notification email again" in r.text
    # A form the browser could not have sent (no address) is explained, not dumped as JSON.
    page = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    r = await app.client.post(f"/web/{TENANT}/verify", data={"csrf": csrf_of(page.text)})
    _is_page(r, 422, "The form could not be read")
    assert "email" in r.text
    # A sign-in step opened by address leads to its sign-in page.
    for step in ("verify", "totp", "register", "reset"):
        r = await app.client.get(f"/web/{TENANT}/{step}")
        assert r.status_code == 303 and r.headers["location"] == f"/web/{TENANT}/signin"
    # The API keeps its JSON answers.
    r = await app.client.get("/v1/no/such/thing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"

    # Signed in, the way back is the inbox; signed out again, this tenant's sign-in page.
    await web_sign_in(app.client, sink, msg.message_id)
    for path, heading in (("/web/no/such/page", "Page not found"),
                          ("/web/messages/nothex", "This link is not valid")):
        r = await app.client.get(path)
        _is_page(r, 404, heading)
        assert 'href="/web/inbox">Back to your inbox' in r.text
    r = await app.client.get("/web/inbox?images=1&cursor=" + "y" * 201)
    _is_page(r, 422, "The form could not be read")
    app.client.cookies.delete("secmsg_session")
    r = await app.client.get("/web/nope")
    _is_page(r, 404, "Page not found")
    assert f'href="/web/{TENANT}/signin">Sign in' in r.text


async def test_signed_out_visit_goes_to_sign_in_then_back(app: Running, seeder: Seeder,
                                                         sink: Sink) -> None:
    msg = await seeder.message()
    # A new browser knows no tenant: the page saying where to sign in (not a dead redirect).
    r = await app.client.get("/web/inbox")
    assert r.status_code == 303 and r.headers["location"] == "/web/signed-out"
    _is_page(await app.client.get("/web/signed-out"), 200, "You are signed out")

    opened = await web_sign_in(app.client, sink, msg.message_id)
    r = await app.client.post("/web/signout", data={"csrf": csrf_of(opened.text)})
    assert r.status_code == 303
    target = f"/web/messages/{msg.message_id}"
    r = await app.client.get(target)
    assert r.status_code == 303
    assert r.headers["location"] == f"/web/{TENANT}/signin?next={target}"
    r = await app.client.get("/web/inbox?q=lab%20results")
    assert r.headers["location"] == \
        f"/web/{TENANT}/signin?next=/web/inbox%3Fq%3Dlab%2520results"
    page = await app.client.get(r.headers["location"])
    assert 'name="next" value="/web/inbox?q=lab%20results"' in page.text
    r = await app.client.post(f"/web/{TENANT}/signin", data={
        "csrf": csrf_of(page.text), "email": BOB, "next": "/web/inbox?q=lab%20results"})
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        "csrf": csrf_of(r.text), "email": BOB, "code": last_code(sink, BOB),
        "next": "/web/inbox?q=lab%20results"})
    assert r.status_code == 303 and r.headers["location"] == "/web/inbox?q=lab%20results"
    assert (await app.client.get(r.headers["location"])).status_code == 200


@pytest.mark.parametrize("evil", [
    "//evil.example/", "https://evil.example/", "/\\evil.example", "/web//evil.example",
    "/web/..//evil.example", "javascript:alert(1)", "/web/inbox\r\nLocation: //evil",
    "http:/evil.example", "/web/%0d%0aSet-Cookie:x", "evil.example/web/inbox"])
async def test_next_is_never_another_site(app: Running, seeder: Seeder, sink: Sink,
                                          evil: str) -> None:
    msg = await seeder.message()
    page = await app.client.get(f"/web/{TENANT}/signin", params={"next": evil})
    assert page.status_code == 200
    nexts = re.findall(r'name="next" value="([^"]*)"', page.text)
    assert nexts and all(n.startswith("/web/") and "//" not in n for n in nexts), nexts
    await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    r = await app.client.post(f"/web/{TENANT}/signin", data={
        "csrf": csrf_of(page.text), "email": BOB, "next": evil})
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        "csrf": csrf_of(r.text), "email": BOB, "code": last_code(sink, BOB), "next": evil})
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("/web/") and "//" not in location and "\n" not in location
