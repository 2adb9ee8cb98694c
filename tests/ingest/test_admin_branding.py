"""The tenant's look through the admin API: display name, footer, disclaimers, logo, colour --
stored where notify, retrieve and the webmail read them, checked at save, audited."""

from __future__ import annotations

import pytest

from secmsg.ingest.admin import create_api_key
from secmsg.shared import mongo
from tests.ingest.access_helpers import audits, auth
from tests.ingest.conftest import TENANT, Ingest

FOOTER = "Sent by ABC Medical of 123 ABC Street Beverly Hills, CA 90210, Call: (555) 555-7323"


@pytest.fixture
async def admin_key(ingest: Ingest) -> str:
    return await create_api_key(ingest.db, tenant_id=TENANT, label="console", scopes=("admin",))


async def test_branding_is_saved_where_the_readers_look_and_audited(
        ingest: Ingest, admin_key: str) -> None:
    body = {"display_name": "ABC Medical", "footer": FOOTER,
            "disclaimers": ["Confidential.", "Second notice."],
            "logo_url": "https://www.abc-medical.example/logo.png", "primary_color": "#0B5394"}
    r = await ingest.client.put("/v1/admin/branding", json=body, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    assert r.json() == {**body, "primary_color": "#0b5394"}
    doc = await ingest.db[mongo.TENANTS].find_one({"_id": TENANT})
    assert doc["display_name"] == "ABC Medical" and doc["footer"] == FOOTER
    assert doc["disclaimers"] == ["Confidential.", "Second notice."]
    assert doc["branding"] == {"logo_url": body["logo_url"], "primary_color": "#0b5394"}

    # left out stays, null clears
    r = await ingest.client.put("/v1/admin/branding", json={"logo_url": None},
                                headers=auth(admin_key))
    assert r.status_code == 200 and r.json()["logo_url"] is None
    assert r.json()["footer"] == FOOTER and r.json()["primary_color"] == "#0b5394"
    got = await ingest.client.get("/v1/admin/branding", headers=auth(admin_key))
    assert got.json() == r.json()
    changes = [e.detail["fields"] for e in await audits(ingest.settings, "branding.changed")]
    assert changes == ["disclaimers,display_name,footer,logo_url,primary_color", "logo_url"]


@pytest.mark.parametrize(("body", "why"), [
    ({"display_name": "Evil\r\nBcc: x@example.org"}, "CR, LF"),
    ({"display_name": ""}, "display_name"),
    ({"logo_url": "http://insecure.example/logo.png"}, "https"),
    ({"logo_url": "javascript:alert(1)"}, "https"),
    ({"logo_url": "data:image/svg+xml;base64,PHN2Zz4="}, "png, jpeg or gif"),
    ({"primary_color": "red; background:url(x)"}, "#rrggbb"),
    ({"primary_color": "#ffd700"}, "contrast of 1.40:1 against white"),  # gold: WCAG AA fails
    ({"primary_color": "#808080"}, "WCAG AA needs at least 4.5:1"),  # grey 3.95:1
    ({"disclaimers": ["ok", ""]}, "disclaimer"),
    ({"unknown": 1}, "unknown"),
    ({}, "nothing to change"),
])
async def test_bad_branding_is_refused_with_a_reason(ingest: Ingest, admin_key: str,
                                                     body: dict[str, object], why: str) -> None:
    before = await ingest.db[mongo.TENANTS].find_one({"_id": TENANT})
    r = await ingest.client.put("/v1/admin/branding", json=body, headers=auth(admin_key))
    assert r.status_code == 400, r.text
    assert why.lower() in r.json()["detail"].lower()
    assert await ingest.db[mongo.TENANTS].find_one({"_id": TENANT}) == before


async def test_branding_needs_the_admin_scope(ingest: Ingest) -> None:
    send_key = await create_api_key(ingest.db, tenant_id=TENANT, label="app")
    r = await ingest.client.put("/v1/admin/branding", json={"footer": "x"},
                                headers=auth(send_key))
    assert r.status_code == 403
