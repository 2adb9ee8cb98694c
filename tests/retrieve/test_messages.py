"""Listing and reading messages: only the recipient's own live messages, every open audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.servers import Server
from devstack.smtp_sink import Sink
from secmsg.shared.settings import CommonSettings
from tests.retrieve.helpers import (
    ALICE,
    BOB,
    OTHER_TENANT,
    TENANT,
    Running,
    Seeder,
    audit_events,
    bearer,
    sign_in,
)

NOT_FOUND = {"error": "not_found", "detail": "message not found"}


async def test_listing_shows_only_my_live_messages(app: Running, seeder: Seeder,
                                                   sink: Sink) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    mine = [await seeder.message(subject=f"m{i}", received_at=base + timedelta(minutes=i),
                                 attachments=[("a.txt", "text/plain", b"x" * i)] * (i % 2))
            for i in range(5)]
    await seeder.message(to=[ALICE])
    await seeder.message(tenant_id=OTHER_TENANT)
    await seeder.message(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await seeder.message(state="purged")
    token = await sign_in(app.client, sink)

    r = await app.client.get("/v1/messages", headers=bearer(token))
    assert r.status_code == 200
    items = r.json()["messages"]
    assert [m["id"] for m in items] == [m.message_id for m in reversed(mine)]
    newest = items[0]
    assert newest["subject"] == "m4" and newest["sender"] == "doctor@acme.example"
    assert newest["attachment_count"] == 0 and items[1]["attachment_count"] == 1
    assert items[1]["total_size"] == mine[3].doc["total_size"]
    assert r.json()["next_cursor"] is None

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await app.client.get("/v1/messages", params=params,
                                     headers=bearer(token))).json()
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [m.message_id for m in reversed(mine)]

    bad = await app.client.get("/v1/messages", params={"cursor": "garbage!"},
                               headers=bearer(token))
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_input"


async def test_read_message_and_audit(app: Running, seeder: Seeder, sink: Sink,
                                      settings: CommonSettings) -> None:
    text = "Résultats: tout va bien.\n" * 100  # spans several segments
    msg = await seeder.message(text=text, html="<p>Hi ☃</p>",
                               attachments=[("scan.pdf", "application/pdf", b"%PDF-1.7 ...")])
    token = await sign_in(app.client, sink)
    r = await app.client.get(f"/v1/messages/{msg.message_id}",
                             headers={**bearer(token), "User-Agent": "pytest-agent/1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == text and body["html"] == "<p>Hi ☃</p>"
    assert body["recipients"] == [{"address": BOB, "kind": "to"}]
    [att] = body["attachments"]
    assert att == {"object_id": next(iter(msg.attachments)), "filename": "scan.pdf",
                   "content_type": "application/pdf", "size": 12}
    assert "wrapped_key" not in r.text and "key" not in att

    events = [e for e in await audit_events(settings) if e["kind"] == "message.opened"]
    assert len(events) == 1
    ev = events[0]
    assert ev["subject"] == f"secmsg.{TENANT}.audit.message.opened"
    assert ev["message_id"] == msg.message_id and ev["recipient"] == "bob@example.org"
    assert ev["client_ip"] == "127.0.0.1" and ev["user_agent"] == "pytest-agent/1"
    assert len(ev["event_id"]) == 32


async def test_not_mine_is_the_same_404(app: Running, seeder: Seeder, sink: Sink,
                                        settings: CommonSettings) -> None:
    others = [
        await seeder.message(to=[ALICE]),
        await seeder.message(tenant_id=OTHER_TENANT),
        await seeder.message(expires_at=datetime.now(UTC) - timedelta(seconds=1)),
        await seeder.message(state="purged"),
    ]
    await seeder.message()  # so Bob can sign in
    token = await sign_in(app.client, sink)
    ids = [m.message_id for m in others] + ["0" * 32, "not-an-id", "A" * 32]
    answers = []
    for mid in ids:
        r = await app.client.get(f"/v1/messages/{mid}", headers=bearer(token))
        answers.append((r.status_code, r.json()))
        r = await app.client.get(f"/v1/messages/{mid}/attachments/{'1' * 32}",
                                 headers=bearer(token))
        answers.append((r.status_code, r.json()))
    assert answers == [(404, NOT_FOUND)] * len(answers)
    # No content access recorded (the sign-in itself is an audit.recorded event).
    assert [e for e in await audit_events(settings) if e.get("kind") != "audit.recorded"] == []


async def test_message_expires_while_signed_in(app: Running, seeder: Seeder,
                                               sink: Sink) -> None:
    msg = await seeder.message(expires_at=datetime.now(UTC) + timedelta(minutes=10))
    token = await sign_in(app.client, sink)
    assert (await app.client.get(f"/v1/messages/{msg.message_id}",
                                 headers=bearer(token))).status_code == 200
    app.shift_clock(11 * 60)
    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(token))
    assert (r.status_code, r.json()) == (404, NOT_FOUND)


async def test_requires_session(app: Running, seeder: Seeder) -> None:
    msg = await seeder.message()
    for path in ("/v1/messages", f"/v1/messages/{msg.message_id}"):
        for headers in ({}, bearer("forged-token")):
            r = await app.client.get(path, headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"


async def test_open_refused_when_audit_cannot_be_published(app: Running, seeder: Seeder,
                                                           sink: Sink,
                                                           nats_server: Server) -> None:
    msg = await seeder.message(text="secret body")
    token = await sign_in(app.client, sink)
    nats_server.stop()
    try:
        r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(token))
        assert r.status_code == 503
        assert r.json()["error"] == "dependency_unavailable"
        assert "secret body" not in r.text
        att = await seeder.message(attachments=[("a.bin", "application/octet-stream", b"z")])
        oid = next(iter(att.attachments))
        r = await app.client.get(f"/v1/messages/{att.message_id}/attachments/{oid}",
                                 headers=bearer(token))
        assert r.status_code == 503 and r.content.find(b"z") == -1
        ready = await app.probes.get("/readyz")
        assert ready.status_code == 503 and "nats" in ready.json()["reasons"]
    finally:
        nats_server.start()


async def test_health_ready_metrics_and_headers(app: Running, seeder: Seeder) -> None:
    assert (await app.probes.get("/healthz")).status_code == 200
    ready = await app.probes.get("/readyz")
    assert ready.status_code == 200, ready.text
    await app.client.get("/v1/messages")
    metrics = (await app.probes.get("/metrics")).text
    assert 'secmsg_retrieve_requests_total{method="GET",route="/v1/messages",status="401"}' \
        in metrics
    assert "secmsg_retrieve_decrypt_seconds_total" in metrics
    r = await app.client.get("/v1/messages")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    spec = (await app.client.get("/openapi.json")).json()
    assert "/v1/messages/{message_id}/attachments/{object_id}" in spec["paths"]
    unknown = await app.client.get("/nope")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"


async def test_link_page_reveals_and_changes_nothing(app: Running, seeder: Seeder,
                                                     mongo_db: Any) -> None:
    msg = await seeder.message(subject="Top secret subject")
    before = await mongo_db["messages"].find_one({"_id": msg.message_id})
    real = await app.client.get(f"/m/{TENANT}/{msg.message_id}")
    fake = await app.client.get(f"/m/{TENANT}/{'0' * 32}")
    assert real.status_code == fake.status_code == 200
    assert real.text.replace(msg.message_id, "X") == fake.text.replace("0" * 32, "X")
    assert "Top secret" not in real.text and "doctor@" not in real.text
    assert real.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in real.headers["content-security-policy"]
    assert await mongo_db["messages"].find_one({"_id": msg.message_id}) == before
    assert await mongo_db["login_codes"].count_documents({}) == 0
