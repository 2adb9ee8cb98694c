"""Admin reports: the audit export (JSON Lines, tenant-scoped, filtered), delivery figures,
deliverability, undeliverable addresses, key rotation (one at a time, new keys wrapped under
the new generation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from secmsg.ingest.adapters.mongo_reports import AUDIT_PAGE, MongoReports
from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.shared import mongo
from secmsg.shared.documents import AuditDoc
from tests.ingest.access_helpers import audits, auth, published
from tests.ingest.conftest import TENANT, Ingest, env_part, envelope

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def admin_key(ingest: Ingest) -> str:
    return await create_api_key(ingest.db, tenant_id=TENANT, label="console", scopes=("admin",))


def _audit(tenant: str, n: int, at: datetime, mid: str) -> dict[str, Any]:
    return {"_id": AuditDoc.id_for(tenant, at, f"e{n}"), "event_id": f"e{n}",
            "tenant_id": tenant, "message_id": mid, "kind": "message.opened",
            "recipient": "bob@example.org", "actor": "x", "at": at, "client_ip": "192.0.2.1"}


async def test_audit_export(ingest: Ingest, admin_key: str) -> None:
    await create_tenant(ingest.db, tenant_id="other", name="Other")
    mid = "a" * 32
    # Ids are tenant- and time-first: tenants whose ids sort right next to this one's
    # ("acme-eu" < "acme:" < "acmf") stay out of its range.
    await ingest.db[mongo.AUDIT].insert_many(
        [_audit(TENANT, i, T0 + timedelta(hours=i), mid if i % 2 else "") for i in range(6)]
        + [_audit(t, 99, T0 + timedelta(hours=2), mid) for t in ("other", "acme-eu", "acmf")])
    r = await ingest.client.get("/v1/admin/audit", headers=auth(admin_key))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [x["event_id"] for x in rows] == [f"e{i}" for i in range(6)]
    assert rows[0]["at"].startswith("2030-01-01T00:00:00")

    r = await ingest.client.get("/v1/admin/audit", headers=auth(admin_key), params={
        "since": (T0 + timedelta(hours=1)).isoformat(),
        "until": (T0 + timedelta(hours=5)).isoformat(), "message_id": mid})
    assert [json.loads(x)["event_id"] for x in r.text.splitlines()] == ["e1", "e3"]
    r = await ingest.client.get("/v1/admin/audit", headers=auth(admin_key), params={
        "since": (T0 + timedelta(hours=2)).isoformat(),
        "until": (T0 + timedelta(hours=4)).isoformat()})
    assert [json.loads(x)["event_id"] for x in r.text.splitlines()] == ["e2", "e3"]
    r = await ingest.client.get("/v1/admin/audit", headers=auth(admin_key), params={
        "since": T0.isoformat(), "until": T0.isoformat()})
    assert r.status_code == 400
    r = await ingest.client.get("/v1/admin/audit", headers=auth(admin_key),
                                params={"since": "yesterday"})
    assert r.status_code == 422
    assert (await ingest.client.get("/v1/admin/audit",
                                    headers=auth(ingest.api_key))).status_code == 403


async def test_audit_export_reads_id_range_pages_to_the_end(ingest: Ingest,
                                                            admin_key: str) -> None:
    """More events than one page (``AUDIT_PAGE``), several in the same millisecond: every
    one exported once, in time order, each read an ``_id`` range of at most one page."""
    t1 = T0 + timedelta(days=1)
    n = AUDIT_PAGE * 2 + 7
    docs = [_audit(TENANT, i, t1 + timedelta(milliseconds=i // 3), "b" * 32) for i in range(n)]
    await ingest.db[mongo.AUDIT].insert_many(docs[::-1])  # stored out of order
    # Time order; within one millisecond, the event ids' order.
    docs.sort(key=lambda d: (d["at"], d["event_id"]))
    r = await ingest.client.get("/v1/admin/audit", headers=auth(admin_key),
                                params={"since": t1.isoformat()})
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [x["event_id"] for x in rows] == [d["event_id"] for d in docs]

    # What the export sends the server: an ``_id`` range alone, sorted, one page at a time.
    seen: list[dict[str, Any]] = []

    class Finds(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "find":
                seen.append(dict(event.command))

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

        def failed(self, event: monitoring.CommandFailedEvent) -> None: ...

    client: AsyncMongoClient[Any] = AsyncMongoClient(ingest.settings.mongo_url, tz_aware=True,
                                                     event_listeners=[Finds()])
    try:
        reports = MongoReports(client[ingest.settings.mongo_db])
        got = [d.event_id async for d in reports.audit(TENANT, since=t1, until=None,
                                                        message_id=None)]
    finally:
        await client.close()
    assert got == [d["event_id"] for d in docs]
    assert len(seen) == 3, seen
    for cmd in seen:
        assert list(cmd["filter"]) == ["_id"] and cmd["sort"] == {"_id": 1}, cmd
        assert cmd["limit"] == AUDIT_PAGE


async def test_delivery_stats_deliverability_undeliverable(ingest: Ingest,
                                                           admin_key: str) -> None:
    states = ["sent"] * 6 + ["bounced", "failed", "deferred"]
    await ingest.db[mongo.DELIVERY_STATUS].insert_many([
        {"_id": f"m:{i}", "tenant_id": TENANT, "message_id": "m", "recipient": f"{i}@x.org",
         "state": s, "updated_at": T0 + timedelta(minutes=i)} for i, s in enumerate(states)]
        + [{"_id": "o:1", "tenant_id": "other", "state": "failed", "updated_at": T0}])
    r = await ingest.client.get("/v1/admin/delivery-stats", headers=auth(admin_key))
    assert r.json() == {"sent": 6, "deferred": 1, "bounced": 1, "failed": 1, "final": 8,
                        "delivery_rate": 0.75}
    r = await ingest.client.get("/v1/admin/delivery-stats", headers=auth(admin_key),
                                params={"since": (T0 + timedelta(minutes=6)).isoformat()})
    assert r.json()["sent"] == 0 and r.json()["final"] == 2

    r = await ingest.client.get("/v1/admin/deliverability", headers=auth(admin_key))
    assert r.json()["checked"] is False
    await ingest.db[mongo.DNSBL_STATUS].insert_one({
        "_id": "platform", "listed": True, "checked_at": T0, "relay": "standby",
        "listings": [{"target": "198.51.100.7", "zone": "zen.example", "answer": "127.0.0.2"}]})
    body = (await ingest.client.get("/v1/admin/deliverability", headers=auth(admin_key))).json()
    assert body["checked"] and body["listed"] and body["relay"] == "standby"
    assert body["listings"][0]["zone"] == "zen.example"

    await ingest.db[mongo.UNDELIVERABLE].insert_many([
        {"_id": f"{TENANT}:gone@example.org", "tenant_id": TENANT, "address": "gone@example.org",
         "status": "5.1.1", "message_id": "m", "at": T0},
        {"_id": f"{TENANT}:early@example.org", "tenant_id": TENANT,
         "address": "early@example.org", "status": "5.1.1", "message_id": "m",
         "at": T0 - timedelta(days=1)},
        *({"_id": f"{t}:gone@example.org", "tenant_id": t, "address": "gone@example.org",
           "status": "5.1.1", "message_id": "m", "at": T0} for t in ("other", "acme-eu"))])
    r = await ingest.client.get("/v1/admin/undeliverable", headers=auth(admin_key))
    assert [a["address"] for a in r.json()["addresses"]] == ["early@example.org",
                                                            "gone@example.org"]
    r = await ingest.client.delete("/v1/admin/undeliverable/Gone@example.org",
                                   headers=auth(admin_key))
    assert r.status_code == 204
    r = await ingest.client.delete("/v1/admin/undeliverable/nobody@example.org",
                                   headers=auth(admin_key))
    assert r.status_code == 404
    # Store owns the list: ingest asks it by an event and removes nothing itself.
    assert await ingest.db[mongo.UNDELIVERABLE].count_documents({}) == 4
    cleared = [e for e in await published(ingest.settings) if e.kind == "undeliverable.cleared"]
    assert [(e.tenant_id, e.address) for e in cleared] == [(TENANT, "gone@example.org")]
    assert cleared[0].cleared_by.startswith("key:")
    ev = await audits(ingest.settings, "undeliverable.cleared")
    assert [e.subject_address for e in ev] == ["gone@example.org"] and ev[0].detail == {}


async def test_key_rotation(ingest: Ingest, admin_key: str) -> None:
    r = await ingest.client.post("/v1/admin/keys/rotate", headers=auth(admin_key))
    assert r.status_code == 202, r.text
    rotation_id, generation = r.json()["rotation_id"], r.json()["generation"]
    assert generation == 1
    tenant = await ingest.db[mongo.TENANTS].find_one({"_id": TENANT})
    assert tenant["key_generation"] == 1
    r = await ingest.client.post("/v1/admin/keys/rotate", headers=auth(admin_key))
    assert r.status_code == 409 and rotation_id in r.json()["detail"]
    requested = [e for e in await published(ingest.settings)
                 if e.kind == "key.rotation_requested"]
    assert [(e.rotation_id, e.generation) for e in requested] == [(rotation_id, 1)]
    assert len(await audits(ingest.settings, "key.rotated")) == 1

    # Until store takes it up, the rotation is the request ingest recorded with the tenant.
    assert await ingest.db[mongo.KEY_ROTATIONS].count_documents({}) == 0
    r = await ingest.client.get(f"/v1/admin/keys/rotations/{rotation_id}",
                                headers=auth(admin_key))
    assert r.json()["state"] == "requested" and r.json()["generation"] == 1
    assert r.json()["requested_by"] == requested[0].requested_by

    # New content is wrapped under generation 1.
    r = await ingest.post([env_part(envelope())])
    assert r.status_code == 202
    ring = ingest.settings.key_ring
    event = (await ingest.events())[-1]
    assert {ring.wrapped_generation(o.wrapped_key) for o in event.objects} == {1}

    # Store's progress record (standing in for store here) is what the admin sees once there.
    await ingest.db[mongo.KEY_ROTATIONS].insert_one({
        "_id": rotation_id, "tenant_id": TENANT, "generation": 1, "state": "running",
        "total": 10, "done": 4, "started_at": T0, "updated_at": T0})
    r = await ingest.client.get(f"/v1/admin/keys/rotations/{rotation_id}",
                                headers=auth(admin_key))
    assert (r.json()["state"], r.json()["done"], r.json()["total"]) == ("running", 4, 10)
    r = await ingest.client.post("/v1/admin/keys/rotate", headers=auth(admin_key))
    assert r.status_code == 409 and "running" in r.json()["detail"]

    # Once store finished, the next rotation goes to generation 2.
    await ingest.db[mongo.KEY_ROTATIONS].update_one({"_id": rotation_id},
                                                    {"$set": {"state": "done"}})
    r = await ingest.client.post("/v1/admin/keys/rotate", headers=auth(admin_key))
    assert r.status_code == 202 and r.json()["generation"] == 2
    assert r.json()["rotation_id"] != rotation_id

    await create_tenant(ingest.db, tenant_id="other", name="Other")
    other = await create_api_key(ingest.db, tenant_id="other", scopes=("admin",))
    r = await ingest.client.get(f"/v1/admin/keys/rotations/{rotation_id}", headers=auth(other))
    assert r.status_code == 404
