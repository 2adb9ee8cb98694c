"""Webmail pages in-process against the real servers: sign-in, CSRF, headers, sanitising,
inbox, and the pages for expired, revoked and recalled messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.smtp_sink import Sink
from secmsg.shared import mongo
from tests.retrieve.helpers import BOB, TENANT, Running, Seeder
from tests.webmail.helpers import audit_form, csrf_of, web_sign_in

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# The sign-in pages run the passkey script, from this origin only (never an inline one).
CSP_SIGNIN = CSP + "; script-src 'self'; connect-src 'self'"
EVIL = ('<p onclick="steal()">Hi <b>Bob</b></p><script>alert(1)</script>'
        '<img src="https://tracker.example/p.gif" onerror="alert(2)" alt="pixel">'
        '<a href="javascript:alert(3)">click</a>'
        '<a href="https://portal.example/results?id=7">portal</a>'
        '<iframe src="https://evil.example"></iframe><style>body{display:none}</style>')


async def test_link_page_headers_labels_and_csrf_cookie(app: Running, seeder: Seeder) -> None:
    msg = await seeder.message()
    r = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP_SIGNIN
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert "no-store" in r.headers["cache-control"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-secmsg_csrf=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie
    page = audit_form(r.text)
    assert page.controls and not page.unlabelled()
    assert {"main", "header", "footer"} <= page.landmarks
    assert re.findall(r"<script[^>]*>", r.text) == ['<script src="/web/static/passkey.js">']
    assert "style=" not in r.text
    # Only the genuine link (its recipient hint) shows the tenant's name; see
    # test_page_answers for the neutral page everyone else gets.
    assert "ACME Medical" not in r.text
    hint = app.deps.keyring.recipient_hint(TENANT, msg.message_id, "bob@example.org")
    r = await app.client.get(f"/m/{TENANT}/{msg.message_id}", params={"r": hint})
    assert "ACME Medical" in r.text

    css = await app.client.get("/web/static/webmail.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_forms_without_valid_csrf_are_refused(app: Running, seeder: Seeder,
                                                    sink: Sink) -> None:
    msg = await seeder.message()
    page = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    token = csrf_of(page.text)
    for data in ({"email": BOB}, {"email": BOB, "csrf": "0" * 64}):
        r = await app.client.post(f"/web/{TENANT}/signin", data=data)
        assert r.status_code == 403 and "form has expired" in r.text
    app.client.cookies.clear()  # a cross-site attacker has the field but not the cookie
    r = await app.client.post(f"/web/{TENANT}/signin", data={"email": BOB, "csrf": token})
    assert r.status_code == 403
    assert sink.handler.for_recipient("bob@example.org") == []  # nothing was sent

    # Signed in, a token from before the sign-in (bound to no session) is no longer valid.
    app.client.cookies.clear()
    opened = await web_sign_in(app.client, sink, msg.message_id)
    assert opened.status_code == 200
    r = await app.client.post("/web/signout", data={"csrf": token})
    assert r.status_code == 403
    r = await app.client.post("/web/signout", data={"csrf": csrf_of(opened.text)})
    assert r.status_code == 303
    # Signed out, the inbox sends this browser to its tenant's sign-in page, then back.
    assert (await app.client.get("/web/inbox")).headers["location"] == \
        f"/web/{TENANT}/signin?next=/web/inbox"


async def test_message_body_is_sanitised_and_remote_images_need_consent(
        app: Running, seeder: Seeder, sink: Sink, mongo_db: Any) -> None:
    msg = await seeder.message(
        html=EVIL, to=[BOB, "carol@example.org"],
        attachments=[("results.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * 2000)])
    await mongo_db[mongo.MESSAGES].update_one(
        {"_id": msg.message_id},
        {"$push": {"recipients": {"address": "secret-bcc@example.org", "kind": "bcc"}}})
    r = await web_sign_in(app.client, sink, msg.message_id)
    assert r.status_code == 200, r.text
    body = r.text
    for bad in ("<script", "alert(", "onerror", "onclick", "javascript:", "<iframe",
                "tracker.example", "display:none"):
        assert bad not in body, bad
    assert "/web/out?u=https%3A%2F%2Fportal.example%2Fresults%3Fid%3D7" in body
    assert "Hi <b>Bob</b>" in body
    assert "1 remote image not shown" in body
    assert "carol@example.org" in body and "secret-bcc" not in body
    assert "results.pdf" in body and "2.0 KB" in body
    att = next(iter(msg.attachments))
    assert f'href="/v1/messages/{msg.message_id}/attachments/{att}"' in body
    assert r.headers["content-security-policy"] == CSP

    shown = await app.client.get(f"/web/messages/{msg.message_id}?images=1")
    assert 'src="https://tracker.example/p.gif"' in shown.text
    assert "onerror" not in shown.text and "<script" not in shown.text
    assert "img-src 'self' data: https:;" in shown.headers["content-security-policy"]

    out = await app.client.get("/web/out", params={"u": "https://portal.example/results?id=7"})
    assert out.status_code == 200 and "https://portal.example/results?id=7" in out.text
    bad = await app.client.get("/web/out", params={"u": "javascript:alert(1)"})
    assert bad.status_code == 400 and "javascript:" not in bad.text.split("<main")[1]

    download = await app.client.get(f"/v1/messages/{msg.message_id}/attachments/{att}")
    assert download.status_code == 200 and download.content == msg.attachments[att]


async def test_inbox_lists_searches_and_pages(make_app: Any, seeder: Seeder, sink: Sink) -> None:
    app = await make_app(web_page_size=2)
    now = datetime.now(UTC)
    first = await seeder.message(subject="Biopsy results", received_at=now - timedelta(hours=3))
    await seeder.message(subject="Invoice March", received_at=now - timedelta(hours=2))
    await seeder.message(subject="Biopsy follow-up", received_at=now - timedelta(hours=1))
    await web_sign_in(app.client, sink, first.message_id)  # opens (reads) the first one

    r = await app.client.get("/web/inbox")
    assert r.status_code == 200
    assert "Biopsy follow-up" in r.text and "Invoice March" in r.text
    assert "Biopsy results" not in r.text and "Older messages" in r.text
    link = next(part.split('"')[0] for part in r.text.split('href="')
                if part.startswith("/web/inbox?cursor="))
    r2 = await app.client.get(link.replace("&amp;", "&"))
    assert "Biopsy results" in r2.text and "Invoice March" not in r2.text

    found = await app.client.get("/web/inbox", params={"q": "biopsy"})
    assert "Biopsy results" in found.text and "Biopsy follow-up" in found.text
    assert "Invoice" not in found.text
    by_sender = await app.client.get("/web/inbox", params={"q": "doctor@acme"})
    assert by_sender.text.count("/web/messages/") == 2  # page size 2


async def test_expired_revoked_and_recalled_pages(app: Running, seeder: Seeder, sink: Sink,
                                                  mongo_db: Any) -> None:
    live = await seeder.message()
    expired = await seeder.message(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    revoked = await seeder.message()
    recalled = await seeder.message()
    await mongo_db[mongo.REVOCATIONS].insert_one(
        {"_id": f"{revoked.message_id}:bob@example.org", "tenant_id": TENANT,
         "message_id": revoked.message_id, "recipient": "bob@example.org", "kind": "revoked",
         "at": datetime.now(UTC), "by": "doctor@acme.example"})
    await mongo_db[mongo.REVOCATIONS].insert_one(
        {"_id": f"{recalled.message_id}:*", "tenant_id": TENANT,
         "message_id": recalled.message_id, "recipient": "*", "kind": "recalled",
         "at": datetime.now(UTC), "by": "doctor@acme.example"})
    await web_sign_in(app.client, sink, live.message_id)

    for seeded, words in ((expired, "expired"), (revoked, "withdrew your access"),
                          (recalled, "recalled")):
        r = await app.client.get(f"/web/messages/{seeded.message_id}")
        assert r.status_code == 410, (words, r.status_code)
        assert words in r.text and "Hello" not in r.text
    other = await seeder.message(to=["someone@example.org"])
    r = await app.client.get(f"/web/messages/{other.message_id}")
    assert r.status_code == 404 and "Message not found" in r.text


async def test_send_needs_csrf_and_shows_why_ingest_failed(make_app: Any, seeder: Seeder,
                                                           sink: Sink) -> None:
    # An ingest that cannot be reached: the page says so, in words, and keeps the text.
    app = await make_app(ingest_url="http://127.0.0.1:9")
    msg = await seeder.message()
    await web_sign_in(app.client, sink, msg.message_id)
    compose = await app.client.get("/web/compose")
    assert compose.status_code == 200 and not audit_form(compose.text).unlabelled()
    fields = {"to": "doctor@acme.example", "subject": "Question", "text": "Is it serious?"}
    files = {"attachment": ("q.txt", b"details", "text/plain")}
    r = await app.client.post("/web/send", data={**fields, "csrf": "f" * 64}, files=files)
    assert r.status_code == 403
    # Nothing sent, but the typed text comes back in a fresh form (the Back button may not).
    assert "Is it serious?" in r.text and "choose the attachments again" in r.text
    assert csrf_of(r.text) == csrf_of(compose.text)
    r = await app.client.post("/web/send", data={**fields, "csrf": csrf_of(compose.text)},
                              files=files)
    assert r.status_code == 503
    assert "unreachable" in r.text and "Is it serious?" in r.text
    assert "choose the attachments again" in r.text


async def test_an_unreadable_send_form_gets_a_page_not_a_json_error(
        app: Running, seeder: Seeder, sink: Sink) -> None:
    msg = await seeder.message()
    await web_sign_in(app.client, sink, msg.message_id)
    compose = await app.client.get("/web/compose")
    # more files than SECMSG_RETRIEVE_WEB_MAX_ATTACHMENTS can ever allow (at most 100)
    too_many = [("attachment", (f"f{i}.txt", b"x", "text/plain")) for i in range(101)]
    r = await app.client.post("/web/send", data={"csrf": csrf_of(compose.text), "to": "x",
                                                  "subject": "s", "text": "t"},
                              files=too_many)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    assert "could not be read" in r.text and "Nothing was sent" in r.text
    assert 'role="alert"' in r.text


async def test_sign_in_follows_the_tenant_policy(app: Running, seeder: Seeder, sink: Sink,
                                                 mongo_db: Any) -> None:
    # password+code: the emailed code alone must not open a session from the webmail either.
    await mongo_db[mongo.TENANTS].update_one({"_id": TENANT},
                                             {"$set": {"policy": {"signin": "password+code"}}})
    msg = await seeder.message()
    page = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    r = await app.client.post(f"/web/{TENANT}/signin", data={
        "csrf": csrf_of(page.text), "email": BOB, "next": f"/web/messages/{msg.message_id}"})
    assert 'id="password"' in r.text and not audit_form(r.text).unlabelled()
    from tests.retrieve.helpers import last_code
    r = await app.client.post(f"/web/{TENANT}/verify", data={
        "csrf": csrf_of(r.text), "email": BOB, "code": last_code(sink, BOB),
        "next": f"/web/messages/{msg.message_id}"})
    assert r.status_code == 401 and 'role="alert"' in r.text
    assert app.deps.settings.cookie_name not in r.headers.get("set-cookie", "")


async def test_sent_slip_is_only_for_the_sender(make_app: Any, seeder: Seeder, sink: Sink,
                                                mongo_db: Any) -> None:
    # ingest unreachable: the slip page still shows the message, and says why no slip.
    app = await make_app(ingest_url="http://127.0.0.1:9")
    msg = await seeder.message()
    mine = await seeder.message(to=["doctor@acme.example"], subject="My question",
                                sender="Bob@Example.org")
    await web_sign_in(app.client, sink, msg.message_id)
    listed = await app.client.get("/web/sent")
    assert listed.status_code == 200
    assert f"/web/sent/{mine.message_id}" in listed.text
    assert f"/web/sent/{msg.message_id}" not in listed.text
    r = await app.client.get(f"/web/sent/{mine.message_id}")
    assert r.status_code == 200 and "My question" in r.text and "unreachable" in r.text
    r = await app.client.get(f"/web/sent/{msg.message_id}")  # sent to Bob, not by him
    assert r.status_code == 404 and "You did not send" in r.text
