"""Account pages in-process against the real servers: create an account from the link (code +
password in one step), password sign-in and its code fallback, reset, authenticator app,
connected apps and toolbar approval -- each with its refusals."""

from __future__ import annotations

from typing import Any

import pyotp

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.retrieve.accounts_helpers import GOOD_PASSWORD, set_policy
from tests.retrieve.helpers import BOB, TENANT, Running, Seeder, last_code
from tests.webmail.helpers import audit_form, csrf_of, web_sign_in


async def _ask(app: Running, message_id: str, intent: str, email: str = BOB) -> Any:
    """Link page -> the email form's button for ``intent`` (register / reset / signin)."""
    page = await app.client.get(f"/m/{TENANT}/{message_id}")
    assert page.status_code == 200, page.text
    return await app.client.post(f"/web/{TENANT}/signin", data={
        "csrf": csrf_of(page.text), "email": email, "intent": intent,
        "next": f"/web/messages/{message_id}"})


def _visible_fields(html: str) -> list[str]:
    return [str(c.get("name")) for c in audit_form(html).controls]


async def test_register_from_the_link_in_one_step(app: Running, seeder: Seeder, sink: Sink,
                                                  mongo_db: Any) -> None:
    await set_policy(mongo_db, signin="password")
    msg = await seeder.message()
    link = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    assert "Create my account" in link.text and 'id="password"' in link.text

    form = await _ask(app, msg.message_id, "register")
    assert form.status_code == 200, form.text
    assert _visible_fields(form.text) == ["code", "password"]  # one step, two fields
    assert not audit_form(form.text).unlabelled()
    assert "12 to 128 characters" in form.text and "breached" in form.text  # rules up front
    assert "purpose" not in form.text
    code = last_code(sink, BOB)
    url = f"/web/{TENANT}/register"
    fields = {"email": BOB, "code": code, "next": f"/web/messages/{msg.message_id}"}

    # CSRF: nothing happens without the form's token.
    r = await app.client.post(url, data={**fields, "password": GOOD_PASSWORD, "csrf": "0" * 64})
    assert r.status_code == 403

    # Too short / breached: the reason next to the password field; the code stays usable.
    for weak, reason in (("short pass", "at least 12 characters"),
                         ("password1234", "breached")):
        r = await app.client.post(url, data={**fields, "password": weak,
                                             "csrf": csrf_of(form.text)})
        assert r.status_code == 400 and reason in r.text, r.text
        assert 'id="password-error"' in r.text and 'role="alert"' in r.text
        assert 'aria-describedby="password-error password-rules"' in r.text
        assert f'value="{code}"' in r.text  # kept: a refused password did not burn it

    # A wrong code is refused next to the code field.
    wrong = "00000000" if code != "00000000" else "11111111"
    r = await app.client.post(url, data={**fields, "code": wrong, "password": GOOD_PASSWORD,
                                         "csrf": csrf_of(form.text)})
    assert r.status_code == 401 and 'aria-describedby="code-error"' in r.text

    r = await app.client.post(url, data={**fields, "password": GOOD_PASSWORD,
                                         "csrf": csrf_of(form.text)})
    assert r.status_code == 303 and r.headers["location"] == f"/web/messages/{msg.message_id}"
    opened = await app.client.get(r.headers["location"])
    assert opened.status_code == 200 and "Hello" in opened.text
    account = await mongo_db[mongo.ACCOUNTS].find_one({"email_lower": BOB.lower()})
    assert account["password_hash"].startswith("$argon2id$")

    # The same code a second time: refused (single use).
    app.client.cookies.clear()
    again = await _ask(app, msg.message_id, "signin")  # a fresh form (and CSRF cookie)
    r = await app.client.post(url, data={**fields, "password": GOOD_PASSWORD + " x",
                                         "csrf": csrf_of(again.text)})
    assert r.status_code == 401
    assert app.deps.settings.cookie_name not in r.headers.get("set-cookie", "")


async def test_password_sign_in_code_fallback_and_reset(app: Running, seeder: Seeder,
                                                        sink: Sink, mongo_db: Any) -> None:
    await set_policy(mongo_db, signin="password")
    msg = await seeder.message()
    target = f"/web/messages/{msg.message_id}"
    form = await _ask(app, msg.message_id, "register")
    r = await app.client.post(f"/web/{TENANT}/register", data={
        "email": BOB, "code": last_code(sink, BOB), "password": GOOD_PASSWORD, "next": target,
        "csrf": csrf_of(form.text)})
    assert r.status_code == 303
    app.client.cookies.clear()

    # The link page signs in with the password directly.
    page = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    data = {"email": BOB, "step": "password", "next": target}
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        **data, "password": "not the password at all", "csrf": csrf_of(page.text)})
    assert r.status_code == 401 and 'id="signin-error"' in r.text and 'id="password"' in r.text
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        **data, "password": GOOD_PASSWORD, "csrf": csrf_of(r.text)})
    assert r.status_code == 303 and r.headers["location"] == target
    app.client.cookies.clear()

    # "Email me a code instead": the code alone is the fallback under this policy.
    code_page = await _ask(app, msg.message_id, "signin")
    assert _visible_fields(code_page.text) == ["code"]
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        "email": BOB, "code": last_code(sink, BOB), "next": target,
        "csrf": csrf_of(code_page.text)})
    assert r.status_code == 303
    app.client.cookies.clear()

    # Reset by emailed code: a new password, the old one dead.
    new_password = "copper kettle whistles at dawn"
    form = await _ask(app, msg.message_id, "reset")
    assert _visible_fields(form.text) == ["code", "password", "totp"]
    assert "Choose a new password" in form.text
    r = await app.client.post(f"/web/{TENANT}/reset", data={
        "email": BOB, "code": last_code(sink, BOB), "password": new_password, "next": target,
        "csrf": csrf_of(form.text)})
    assert r.status_code == 303 and r.headers["location"] == target
    app.client.cookies.clear()
    page = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        **data, "password": GOOD_PASSWORD, "csrf": csrf_of(page.text)})
    assert r.status_code == 401
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        **data, "password": new_password, "csrf": csrf_of(r.text)})
    assert r.status_code == 303


async def test_authenticator_enrolment_then_required(app: Running, seeder: Seeder,
                                                     sink: Sink, mongo_db: Any) -> None:
    msg = await seeder.message()
    opened = await web_sign_in(app.client, sink, msg.message_id)
    account = await app.client.get("/web/account")
    assert account.status_code == 200 and "Set up an authenticator app" in account.text
    r = await app.client.post("/web/account/authenticator", data={"csrf": "f" * 64})
    assert r.status_code == 403
    r = await app.client.post("/web/account/authenticator", data={"csrf": csrf_of(opened.text)})
    assert r.status_code == 200
    secret = r.text.split('id="totp-secret">')[1].split("<")[0]
    assert "otpauth://totp/" in r.text and len(secret) >= 32
    totp = pyotp.TOTP(secret)
    wrong = str((int(totp.now()) + 1) % 1000000).zfill(6)
    bad = await app.client.post("/web/account/authenticator/confirm", data={
        "code": wrong, "secret": secret, "csrf": csrf_of(r.text)})
    assert bad.status_code == 401 and 'aria-describedby="confirm-error"' in bad.text
    assert secret in bad.text
    ok = await app.client.post("/web/account/authenticator/confirm", data={
        "code": totp.now(), "secret": secret, "csrf": csrf_of(bad.text)})
    assert ok.status_code == 200 and "Authenticator app set up" in ok.text
    assert ok.text.count("<li><code>") == 10  # the recovery codes, shown once
    doc = await mongo_db[mongo.ACCOUNTS].find_one({"email_lower": BOB.lower()})
    assert doc["totp_secret_sealed"]

    # The next sign-in stops at the authenticator step.
    app.client.cookies.clear()
    code_page = await _ask(app, msg.message_id, "signin")
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        "email": BOB, "code": last_code(sink, BOB), "next": f"/web/messages/{msg.message_id}",
        "csrf": csrf_of(code_page.text)})
    assert r.status_code == 200 and "authenticator app" in r.text and 'name="ticket"' in r.text


async def _device_request(app: Running) -> dict[str, Any]:
    r = await app.client.post("/v1/device/authorize", json={
        "tenant_id": TENANT, "client_name": "Outlook toolbar", "scopes": ["read"]})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_device_approval_and_connected_apps(app: Running, seeder: Seeder,
                                                  sink: Sink) -> None:
    msg = await seeder.message()
    flow = await _device_request(app)
    assert flow["verification_uri"].endswith("/device")

    # Not signed in: the code leads to the organisation's sign-in, and back.
    r = await app.client.get("/device", params={"user_code": flow["user_code"]})
    assert r.status_code == 303 and r.headers["location"].startswith("/web/device?user_code=")
    r = await app.client.get(r.headers["location"])
    assert r.status_code == 303 and r.headers["location"].startswith(f"/web/{TENANT}/signin")
    assert (await app.client.get(r.headers["location"])).status_code == 200

    opened = await web_sign_in(app.client, sink, msg.message_id)
    page = await app.client.get("/web/device", params={"user_code": flow["user_code"]})
    assert page.status_code == 200 and "Outlook toolbar" in page.text
    assert "read your secure messages" in page.text and not audit_form(page.text).unlabelled()

    # A wrong user code, a missing CSRF token: refused, nothing decided.
    r = await app.client.post("/web/device", data={
        "user_code": "BCDF-GHJK", "decision": "approve", "csrf": csrf_of(page.text)})
    assert r.status_code == 404 and 'aria-describedby="device-error"' in r.text
    r = await app.client.post("/web/device", data={
        "user_code": flow["user_code"], "decision": "approve", "csrf": csrf_of(opened.text)[::-1]})
    assert r.status_code == 403
    poll = await app.client.post("/v1/device/token", json={"device_code": flow["device_code"]})
    assert poll.json()["error"] in ("authorization_pending", "slow_down")

    r = await app.client.post("/web/device", data={
        "user_code": flow["user_code"].lower(), "decision": "approve",
        "csrf": csrf_of(page.text)})
    assert r.status_code == 200 and "Outlook toolbar is connected" in r.text
    token = await app.client.post("/v1/device/token", json={"device_code": flow["device_code"]})
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert (await app.client.get("/v1/messages", headers=bearer)).status_code == 200
    # Approving the same code again: it is used up.
    r = await app.client.post("/web/device", data={
        "user_code": flow["user_code"], "decision": "approve", "csrf": csrf_of(page.text)})
    assert r.status_code == 404

    apps = await app.client.get("/web/account/apps")
    assert apps.status_code == 200 and "Outlook toolbar" in apps.text and "active" in apps.text
    assert "webmail" not in apps.text.split("<main")[1].split("</table>")[0]
    r = await app.client.post("/web/account/apps/revoke", data={
        "token_id": token.json()["token_id"], "csrf": "0" * 64})
    assert r.status_code == 403
    r = await app.client.post("/web/account/apps/revoke", data={
        "token_id": "0" * 32, "csrf": csrf_of(apps.text)})
    assert r.status_code == 404
    r = await app.client.post("/web/account/apps/revoke", data={
        "token_id": token.json()["token_id"], "csrf": csrf_of(apps.text)})
    assert r.status_code == 200 and "Access removed" in r.text and "disconnected" in r.text
    cookies = dict(app.client.cookies)
    app.client.cookies.clear()
    assert (await app.client.get("/v1/messages", headers=bearer)).status_code == 401
    app.client.cookies.update(cookies)

    # A denied request: the toolbar is told so.
    flow = await _device_request(app)
    page = await app.client.get("/web/device", params={"user_code": flow["user_code"]})
    r = await app.client.post("/web/device", data={
        "user_code": flow["user_code"], "decision": "deny", "csrf": csrf_of(page.text)})
    assert r.status_code == 200 and "Refused" in r.text
    poll = await app.client.post("/v1/device/token", json={"device_code": flow["device_code"]})
    assert poll.json()["error"] == "access_denied"


async def test_link_with_recipient_hint_prefills_the_address(app: Running, seeder: Seeder) -> None:
    msg = await seeder.message(to=[BOB, "carol@example.org"])
    hint = app.deps.keyring.recipient_hint(TENANT, msg.message_id, BOB)
    r = await app.client.get(f"/m/{TENANT}/{msg.message_id}", params={"r": hint})
    assert r.status_code == 200 and f'value="{BOB}"' in r.text
    for bad in ("garbage", app.deps.keyring.recipient_hint(TENANT, msg.message_id, "x@y.org")):
        r = await app.client.get(f"/m/{TENANT}/{msg.message_id}", params={"r": bad})
        assert r.status_code == 200 and 'value=""' in r.text


async def test_signed_out_device_code_lookups_are_rate_limited(app: Running) -> None:
    from secmsg.retrieve.web.device_approval import DEVICE_LOOKUPS

    statuses = [(await app.client.get("/web/device", params={"user_code": f"ABCD-{i:04d}"}))
                .status_code for i in range(DEVICE_LOOKUPS + 1)]
    assert statuses[:DEVICE_LOOKUPS] == [404] * DEVICE_LOOKUPS  # unknown codes
    last = await app.client.get("/web/device", params={"user_code": "ABCD-9999"})
    assert statuses[-1] == 429 and last.status_code == 429
    assert "too many codes tried" in last.text
