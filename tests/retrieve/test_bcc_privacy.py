"""Bcc end to end: a message with To, Cc and two Bcc recipients, through the real services.

Every recipient reads it (the API once answered 500 to a bcc recipient), and nobody learns a
bcc address they were not told: not the to/cc recipients (API, webmail page, notification
email, toolbar original) and not one bcc recipient about the other; the delivery slip lists
bcc recipients only to the sender.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from secmsg.shared import mongo
from tests.e2e.helpers import Platform, eventually

TO, CC = "to.person@example.org", "cc.person@example.org"
BCC1, BCC2 = "blind.one@example.org", "blind.two@example.org"
SENDER = "doctor@acme.example"
EVERYONE = (TO, CC, BCC1, BCC2)


def _hidden_from(who: str) -> list[str]:
    """The bcc addresses ``who`` must never see (a bcc recipient may see itself)."""
    return [b for b in (BCC1, BCC2) if b != who]


def _assert_absent(text: str | bytes, who: str, where: str) -> None:
    blob = text.decode("latin-1") if isinstance(text, bytes) else text
    for addr in _hidden_from(who):
        assert addr not in blob.lower(), f"{where} shows {addr} to {who}"


async def _submit_json(platform: Platform) -> str:
    envelope = {"from": SENDER, "to": [TO], "cc": [CC], "bcc": [BCC1, BCC2],
                "subject": "Results with blind copies", "text": "the secret text"}
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(platform.ingest_url + "/v1/messages",
                         files=[("envelope", (None, json.dumps(envelope).encode(),
                                              "application/json"))],
                         headers={"Authorization": f"Bearer {platform.api_key}"})
    assert r.status_code == 202, r.text
    return str(r.json()["message_id"])


async def _submit_rfc822(platform: Platform) -> str:
    original = (f"From: Doctor <{SENDER}>\r\nTo: {TO}\r\nCc: {CC}\r\n"
                f"Bcc: {BCC1}, {BCC2}\r\nSubject: Outlook with blind copies\r\n"
                "Message-ID: <bcc-1@acme.example>\r\nDate: Tue, 01 Jan 2030 10:00:00 +0000\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                "the original text\r\n").encode()
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(platform.ingest_url + "/v1/messages/rfc822", content=original,
                         headers={"Authorization": f"Bearer {platform.api_key}",
                                  "Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text
    return r.headers["X-Secure-Message-Id"]


def _notifications(platform: Platform, address: str, message_id: str) -> list[Any]:
    return [c for c in platform.sink.handler.for_recipient(address)
            if c.message["X-Secure-Message-Id"] == message_id]


async def test_bcc_recipients_read_and_nobody_sees_another_bcc(platform: Platform) -> None:
    json_id = await _submit_json(platform)
    rfc_id = await _submit_rfc822(platform)
    for mid in (json_id, rfc_id):
        await eventually(lambda m=mid: platform.count(mongo.MESSAGES, {"_id": m}), timeout=30,
                         what="the message on record")

    # The notification each recipient got names no bcc address it was not told about.
    for who in EVERYONE:
        mails = await eventually(lambda w=who: _notifications(platform, w, json_id),
                                 timeout=30, what=f"the notification to {who}")
        assert len(mails) == 1
        _assert_absent(mails[0].data, who, "the notification email")

    for who in EVERYONE:
        async with platform.retrieve_client() as web:
            token = await platform.sign_in(web, who)
            auth = {"Authorization": f"Bearer {token}"}
            for mid in (json_id, rfc_id):
                r = await web.get(f"/v1/messages/{mid}", headers=auth)
                assert r.status_code == 200, (who, r.text)
                listed = {(x["address"].lower(), x["kind"]) for x in r.json()["recipients"]}
                expected = {(TO, "to"), (CC, "cc")} | (
                    {(who, "bcc")} if who in (BCC1, BCC2) else set())
                assert listed == expected, (who, listed)
                _assert_absent(r.text, who, "GET /v1/messages/{id}")

                page = await web.get(f"/web/messages/{mid}")
                assert page.status_code == 200, (who, page.text[:300])
                assert "the secret text" in page.text or "the original text" in page.text
                _assert_absent(page.text, who, "the webmail message page")

                orig = await web.get(f"/v1/toolbar/messages/{mid}/original", headers=auth)
                assert orig.status_code == 200, (who, orig.text[:300])
                _assert_absent(orig.content, who, "the toolbar original")

    # The slip: the sender (the key that submitted) sees every recipient, bcc included; a
    # tenant admin who is not the sender sees no bcc recipient.
    from secmsg.ingest.admin import create_api_key

    admin_key = await create_api_key(platform.db, tenant_id=platform.tenant, label="admin",
                                     scopes=("send", "admin"))
    async with httpx.AsyncClient(base_url=platform.ingest_url, timeout=30) as c:
        mine = await c.get(f"/v1/messages/{json_id}/slip",
                           headers={"Authorization": f"Bearer {platform.api_key}"})
        other = await c.get(f"/v1/messages/{json_id}/slip",
                            headers={"Authorization": f"Bearer {admin_key}"})
    assert mine.status_code == 200 and other.status_code == 200, (mine.text, other.text)
    assert {x["address"].lower() for x in mine.json()["recipients"]} == set(EVERYONE)
    assert {x["address"].lower() for x in other.json()["recipients"]} == {TO, CC}
    for addr in (BCC1, BCC2):
        assert addr not in other.text.lower()
