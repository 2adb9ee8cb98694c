"""The tenant's ``list_unsubscribe`` setting through the admin API, then in the notifications
notify really sends (all four services as processes, mail caught by a real SMTP sink).

Off by default (one-to-one transactional mail: docs/deliverability.md); a tenant admin turns
it on with ``PUT /v1/admin/list-unsubscribe`` and off with ``DELETE``; bad values get a 400
with a reason and change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from secmsg.ingest.admin import SCOPE_ADMIN, SCOPE_SEND, create_api_key
from tests.e2e.helpers import Platform, submit

pytestmark = pytest.mark.timeout(180)

URL = "https://acme.example/unsubscribe?t=4711"
MAILTO = "mailto:unsubscribe@acme.example?subject=unsubscribe"


async def _notification(platform: Platform, admin_key: str, to: str) -> Any:
    message_id = await submit(platform, sender="alice@acme.example", to=[to],
                              subject="Your results", text="Secret", api_key=admin_key)
    await platform.notified(to, message_id)
    (cap,) = [c for c in platform.sink.handler.for_recipient(to)
              if c.message["X-Secure-Message-Id"] == message_id]
    return cap.message


async def test_list_unsubscribe_is_set_through_the_admin_api_and_lands_in_notifications(
        platform: Platform) -> None:
    admin_key = await create_api_key(platform.db, tenant_id=platform.tenant, label="admin",
                                     scopes=(SCOPE_ADMIN, SCOPE_SEND))
    api = platform.ingest_url + "/v1/admin/list-unsubscribe"
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:
        # The default: off, and notifications carry neither header.
        r = await http.get(api)
        assert r.status_code == 200, r.text
        assert r.json() == {"enabled": False, "url": None, "mailto": None, "one_click": False,
                            "updated_at": None}
        before = await _notification(platform, admin_key, "bob@example.org")
        assert before["List-Unsubscribe"] is None and before["List-Unsubscribe-Post"] is None

        # Bad values: a 400 (422 for an unknown field) with a reason, nothing stored.
        for body, status, words in (
                ({}, 400, "url and/or mailto"),
                ({"url": "http://acme.example/unsubscribe"}, 400, "https://"),
                ({"url": "https://acme.example/u,<x>"}, 400, "commas"),
                ({"url": "https://acme.example/u\r\nBcc: x@evil.example"}, 400, "spaces"),
                ({"mailto": "unsubscribe@acme.example"}, 400, "mailto:"),
                ({"url": URL, "list_id": "x"}, 422, "list_id")):
            r = await http.put(api, json=body)
            assert r.status_code == status, (body, r.text)
            assert words in str(r.json()["detail"]), (body, r.json())
        assert (await http.get(api)).json()["enabled"] is False
        r = await http.get(platform.ingest_url + "/v1/admin/list-unsubscribe",
                           headers={"Authorization": f"Bearer {platform.api_key}"})
        assert r.status_code == 403, "a send-only key cannot read or change it"

        # On: the next notification has both headers.
        r = await http.put(api, json={"url": URL, "mailto": MAILTO})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert (answer["enabled"], answer["url"], answer["mailto"], answer["one_click"]) == (
            True, URL, MAILTO, True)
        assert (await http.get(api)).json() == answer
        on = await _notification(platform, admin_key, "carol@example.org")
        assert on["List-Unsubscribe"] == f"<{URL}>, <{MAILTO}>"
        assert on["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        # mailto only: the header, but no one-click (RFC 8058 needs an https URL).
        r = await http.put(api, json={"mailto": MAILTO})
        assert r.status_code == 200 and r.json()["one_click"] is False, r.text
        mail_only = await _notification(platform, admin_key, "erin@example.org")
        assert mail_only["List-Unsubscribe"] == f"<{MAILTO}>"
        assert mail_only["List-Unsubscribe-Post"] is None

        # Off again: back to no header.
        r = await http.delete(api)
        assert r.status_code == 204, r.text
        assert (await http.get(api)).json()["enabled"] is False
        off = await _notification(platform, admin_key, "dave@example.org")
        assert off["List-Unsubscribe"] is None and off["List-Unsubscribe-Post"] is None
