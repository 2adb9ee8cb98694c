"""The tenant admin API for notification templates: scopes, save/preview/delete, refusals,
and the last good version staying in place (real FerretDB via the ``ingest`` fixture)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from secmsg.ingest.admin import create_api_key
from secmsg.shared import mongo, templating
from tests.ingest.conftest import TENANT, Ingest, env_part, envelope

GOOD_HTML = "<p>{{ sender }} wrote about {{ subject }}: <a href=\"{{ link }}\">open</a></p>\n"
GOOD_TEXT = "{{ tenant_name }}: {{ sender }} sent you a secure message.\n{{ link }}\n"


@pytest.fixture
async def admin_key(ingest: Ingest) -> str:
    return await create_api_key(ingest.db, tenant_id=TENANT, label="console", scopes=("admin",))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def put(ingest: Ingest, key: str, kind: str, source: str) -> httpx.Response:
    return await ingest.client.put(f"/v1/admin/templates/{kind}", json={"source": source},
                                   headers=auth(key))


async def stored(ingest: Ingest) -> dict[str, Any]:
    doc = await ingest.db[mongo.TENANTS].find_one({"_id": TENANT})
    return dict(doc.get("templates") or {})


async def test_admin_endpoints_need_the_admin_scope(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.get("/v1/admin/templates")
    assert r.status_code == 401
    r = await ingest.client.get("/v1/admin/templates", headers=auth(ingest.api_key))
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden" and "'admin' scope" in r.json()["detail"]
    r = await put(ingest, ingest.api_key, "notification_html", GOOD_HTML)
    assert r.status_code == 403
    assert await stored(ingest) == {}
    # An admin-only key cannot send.
    r = await ingest.client.post("/v1/messages", content=b"", headers={
        **ingest.headers(), **auth(admin_key)})
    assert r.status_code == 403 and "'send' scope" in r.json()["detail"]
    r = await ingest.client.get("/v1/admin/templates", headers=auth(admin_key))
    assert r.status_code == 200
    body = r.json()
    assert [t["kind"] for t in body["templates"]] == list(templating.KINDS)
    assert all(t["is_default"] and t["version"] is None for t in body["templates"])
    assert body["templates"][1]["source"] == templating.KINDS["notification_html"].default
    assert "link" in body["variables"] and body["limits"]["max_source_bytes"] == 32 * 1024


async def test_a_key_without_scopes_keeps_sending_rights_only(ingest: Ingest) -> None:
    await ingest.db[mongo.API_KEYS].update_many({}, {"$unset": {"scopes": ""}})
    assert await ingest.db[mongo.API_KEYS].count_documents({"scopes": {"$exists": True}}) == 0
    r = await ingest.post([env_part(envelope())])
    assert r.status_code == 202, r.text
    r = await ingest.client.get("/v1/admin/templates", headers=auth(ingest.api_key))
    assert r.status_code == 403


async def test_save_list_and_delete(ingest: Ingest, admin_key: str) -> None:
    r = await put(ingest, admin_key, "notification_html", GOOD_HTML)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and not r.json()["is_default"]
    r = await put(ingest, admin_key, "notification_text", GOOD_TEXT)
    assert r.status_code == 200, r.text
    r = await put(ingest, admin_key, "notification_html", GOOD_HTML + "<p>v2</p>\n")
    assert r.json()["version"] == 2
    doc = await stored(ingest)
    assert doc["notification_html"]["source"] == GOOD_HTML + "<p>v2</p>\n"
    assert doc["notification_html"]["version"] == 2
    assert doc["notification_html"]["updated_at"] is not None
    assert doc["notification_text"]["source"] == GOOD_TEXT
    listed = (await ingest.client.get("/v1/admin/templates", headers=auth(admin_key))).json()
    by_kind = {t["kind"]: t for t in listed["templates"]}
    assert by_kind["notification_text"]["source"] == GOOD_TEXT
    assert not by_kind["notification_text"]["is_default"]

    r = await ingest.client.delete("/v1/admin/templates/notification_html", headers=auth(admin_key))
    assert r.status_code == 200 and r.json()["is_default"]
    assert set(await stored(ingest)) == {"notification_text"}
    r = await ingest.client.delete("/v1/admin/templates/nope", headers=auth(admin_key))
    assert r.status_code == 404 and "notification_html" in r.json()["detail"]


async def test_preview_renders_the_sample_escaped_and_stores_nothing(
        ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.post("/v1/admin/templates/notification_html/preview",
                                 json={"source": GOOD_HTML}, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    assert templating.SAMPLE_LINK in out
    assert "&lt;b&gt;&amp; more&lt;/b&gt;" in out and "<b>" not in out
    r = await ingest.client.post("/v1/admin/templates/notification_text/preview",
                                 json={"source": GOOD_TEXT}, headers=auth(admin_key))
    assert r.json()["output"].startswith("Acme Medical: alice@example.com")  # tenant's name
    r = await ingest.client.post("/v1/admin/templates/notification_text/preview",
                                 json={"source": "{{ config }}{{ link }}"},
                                 headers=auth(admin_key))
    assert r.status_code == 400 and "config" in r.json()["detail"]
    assert await stored(ingest) == {}


REFUSED = [
    ("{{ subject }", 400, "syntax error"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}{{ link }}", 400, "__subclasses__"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}{{ link }}", 400, "__globals__"),
    ("{{ config }}{{ link }}", 400, "unknown variable"),
    ("{{ [].append(1) }}{{ link }}", 400, "unsafe"),
    ("Hello {{ sender }}", 400, "{{ link }}"),
    ("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}{{ link }}", 413, "output"),
    ("x" * (32 * 1024) + "{{ link }}", 413, "limit is 32768"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
     "{{ link }}", 400, "longer than 0.5 s"),
]


@pytest.mark.parametrize(("source", "status", "detail"), REFUSED,
                         ids=["syntax", "mro", "globals", "config", "append", "no-link",
                              "output", "source-size", "timeout"])
async def test_refused_at_save_and_the_last_good_version_keeps_serving(
        ingest: Ingest, admin_key: str, source: str, status: int, detail: str) -> None:
    assert (await put(ingest, admin_key, "notification_text", GOOD_TEXT)).status_code == 200
    r = await put(ingest, admin_key, "notification_text", source)
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]
    doc = await stored(ingest)
    assert doc["notification_text"]["source"] == GOOD_TEXT
    assert doc["notification_text"]["version"] == 1


async def test_bad_bodies(ingest: Ingest, admin_key: str) -> None:
    url = "/v1/admin/templates/notification_text"
    r = await ingest.client.put(url, content=b"not json", headers=auth(admin_key))
    assert r.status_code == 400 and "source" in r.json()["detail"]
    r = await ingest.client.put(url, json={"source": 5}, headers=auth(admin_key))
    assert r.status_code == 400
    huge = json.dumps({"source": "x" * (400 * 1024)}).encode()
    r = await ingest.client.put(url, content=huge, headers=auth(admin_key))
    assert r.status_code == 413
    r = await put(ingest, admin_key, "unknown_kind", GOOD_TEXT)
    assert r.status_code == 404
    assert await stored(ingest) == {}


async def test_code_email_kinds_are_editable(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.get("/v1/admin/templates", headers=auth(admin_key))
    kinds = {t["kind"] for t in r.json()["templates"]}
    assert {"code_email_text", "code_email_html"} <= kinds
    source = templating.KINDS["code_email_text"].default + "\nAcme IT\n"
    r = await ingest.client.put("/v1/admin/templates/code_email_text",
                                json={"source": source}, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    assert r.json()["is_default"] is False and r.json()["version"] == 1


async def test_template_and_smtp_changes_are_audited(ingest: Any, admin_key: str) -> None:
    from tests.ingest.access_helpers import audits

    source = "Hi {{ tenant_name }}: {{ link }}"
    r = await ingest.client.put("/v1/admin/templates/notification_text",
                                json={"source": source},
                                headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 200, r.text
    r = await ingest.client.delete("/v1/admin/templates/notification_text",
                                   headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 200, r.text
    changes = [(e.detail["kind"], e.detail["change"])
               for e in await audits(ingest.settings, "template.changed")]
    assert changes == [("notification_text", "saved"), ("notification_text", "reset")]
    r = await ingest.client.put("/v1/admin/smtp", json={"mode": "platform"},
                                headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 200, r.text
    [smtp] = await audits(ingest.settings, "smtp.changed")
    assert smtp.detail == {"mode": "platform", "password": "kept"}
