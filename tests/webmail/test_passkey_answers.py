"""Passkey refusals in-process against the real servers: what a forged, replayed, oversized or
foreign answer gets. (Registration and sign-in that succeed: test_passkeys.py, in Chromium.)"""

from __future__ import annotations

import json
import re
from typing import Any

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.retrieve.helpers import TENANT, Running, Seeder
from tests.webmail.helpers import csrf_of, web_sign_in

REFUSED = "Passkey: the sign-in details are wrong, expired or already used"
TICKET_RE = re.compile(r'name="ticket" value="([^"]+)"')


def assertion(credential_id: str) -> str:
    """The shape of a browser's answer to navigator.credentials.get (nothing valid in it)."""
    return json.dumps({"id": credential_id, "rawId": credential_id, "type": "public-key",
                       "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA",
                                    "signature": "AAAA", "userHandle": "AAAA"},
                       "clientExtensionResults": {}})


async def _options(app: Running, tenant_id: str) -> dict[str, Any]:
    r = await app.client.post(f"/web/{tenant_id}/passkey/options")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    got: dict[str, Any] = r.json()
    return got


async def test_signin_answers_that_are_not_a_valid_passkey_are_refused(
        app: Running, mongo_db: Any) -> None:
    ours = await _options(app, TENANT)
    unknown = await _options(app, "no-such-tenant")
    options = json.loads(ours["options"])
    assert options["userVerification"] == "required" and options["allowCredentials"] == []
    # The same for an unknown tenant id, challenge aside: it says nothing about the tenant.
    strip = {k: v for k, v in options.items() if k != "challenge"}
    assert strip == {k: v for k, v in json.loads(unknown["options"]).items() if k != "challenge"}

    page = await app.client.get(f"/web/{TENANT}/signin")
    assert 'data-passkey="signin"' in page.text and "/web/static/passkey.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    csrf = csrf_of(page.text)
    url = f"/web/{TENANT}/passkey"
    cases = {
        "not JSON": ("not json", ours["ticket"]),
        "an empty answer": ("{}", ours["ticket"]),
        "a credential nobody registered": (assertion("AAAAAAAAAAAAAAAA"), ours["ticket"]),
        "a forged ticket": (assertion("AAAAAAAAAAAAAAAA"), ours["ticket"][:-4] + "AAAA"),
        "another tenant's ticket": (assertion("AAAAAAAAAAAAAAAA"), unknown["ticket"]),
        "no ticket": (assertion("AAAAAAAAAAAAAAAA"), ""),
    }
    for what, (credential, ticket) in cases.items():
        r = await app.client.post(url, data={"csrf": csrf, "ticket": ticket,
                                             "credential": credential, "next": "/web/inbox"})
        assert r.status_code == 401, (what, r.status_code)
        assert REFUSED in r.text, what
        assert "set-cookie" not in r.headers or "secmsg_session" not in r.headers[
            "set-cookie"], what
    assert await mongo_db[mongo.SESSIONS].count_documents({}) == 0

    # Without the form's CSRF token nothing is tried; an oversized answer is refused unread.
    r = await app.client.post(url, data={"csrf": "0" * 64, "ticket": ours["ticket"],
                                         "credential": assertion("AAAA")})
    assert r.status_code == 403
    r = await app.client.post(url, data={"csrf": csrf, "ticket": ours["ticket"],
                                         "credential": "x" * (64 * 1024 + 1)})
    assert r.status_code == 422 and "credential" in r.text


async def test_registration_answers_that_are_not_a_valid_passkey_are_refused(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any) -> None:
    msg = await seeder.message()
    await web_sign_in(app.client, sink, msg.message_id)
    page = await app.client.get("/web/account/passkeys")
    assert page.status_code == 200, page.text
    assert "You have no passkey yet." in page.text
    ticket = TICKET_RE.search(page.text)
    assert ticket
    options = json.loads(re.search(
        r"<script type=\"application/json\" data-passkey-options>(.*?)</script>",
        page.text, re.S)[1])  # type: ignore[index]
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    url = "/web/account/passkeys"
    form = {"csrf": csrf_of(page.text), "ticket": ticket[1], "name": "mine"}

    r = await app.client.post(url, data={**form, "csrf": "0" * 64, "credential": "{}"})
    assert r.status_code == 403
    r = await app.client.post(url, data={**form, "credential": ""})
    assert r.status_code == 400 and "No passkey was created" in r.text
    r = await app.client.post(url, data={**form, "credential": '{"id": "AAAA"}'})
    assert r.status_code == 400 and "the passkey could not be verified" in r.text
    # The ticket was used by that answer: a second answer to the same challenge is refused.
    r = await app.client.post(url, data={**form, "credential": '{"id": "AAAA"}'})
    assert r.status_code == 400 and "expired or was already used" in r.text
    r = await app.client.post("/web/account/passkeys/remove",
                              data={"csrf": form["csrf"], "credential_id": "AAAA"})
    assert r.status_code == 404 and "no such passkey" in r.text
    assert await mongo_db[mongo.PASSKEYS].count_documents({}) == 0
