"""Cached API keys and tenants (shared/tenant_cache.py) through real processes: two ingest
replicas on one NATS, each with its own cache. A key revoked through the admin API on one
replica stops working on the other within a second, because ``tenant.changed`` reaches it;
until then the other replica served the key from its cache (its metrics say so)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from devstack.services import ServiceProc
from secmsg.ingest.admin import create_api_key, create_tenant
from tests.ingest.conftest import BOUNDARY, env_part, envelope, multipart

BODY = multipart([env_part(envelope())])
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def lookups(metrics: str, cache: str, result: str) -> float:
    m = re.search(rf'secmsg_tenant_cache_lookups_total{{cache="{cache}",result="{result}"}} '
                  r"([0-9.e+]+)", metrics)
    return float(m.group(1)) if m else 0.0


async def submit(http: httpx.AsyncClient, key: str) -> int:
    r = await http.post("/v1/messages", content=BODY,
                        headers={"Authorization": f"Bearer {key}", "Content-Type": CTYPE})
    assert r.status_code in (202, 401), r.text
    return r.status_code


async def test_revoked_key_stops_working_on_every_replica_within_a_second(
        services: Callable[..., ServiceProc], mongo_db: Any) -> None:
    await create_tenant(mongo_db, tenant_id="cachetest", name="Cache Org")
    key = await create_api_key(mongo_db, tenant_id="cachetest", label="sender")
    admin = await create_api_key(mongo_db, tenant_id="cachetest", label="admin",
                                 scopes=("admin",))
    a, b = services("ingest"), services("ingest")
    async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as http_a, \
            httpx.AsyncClient(base_url=b.base_url, timeout=30) as http_b, \
            httpx.AsyncClient(base_url=b.internal_url, timeout=30) as probes_b:
        for http in (http_a, http_b, http_b):
            assert await submit(http, key) == 202
        metrics = (await probes_b.get("/metrics")).text
        # B looked the key up once and then answered from its cache.
        assert lookups(metrics, "ingest_api_keys", "miss") == 1, metrics
        assert lookups(metrics, "ingest_api_keys", "hit") >= 1, metrics
        assert lookups(metrics, "ingest_tenants", "hit") >= 1, metrics

        key_id = key.split("_")[1]
        r = await http_a.delete(f"/v1/admin/api-keys/{key_id}",
                                headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 204, r.text
        # The replica that made the change refuses the key at once.
        assert await submit(http_a, key) == 401
        # The other one within a second of the revocation's answer (polled).
        deadline = time.monotonic() + 1.0
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(await submit(http_b, key))
            if statuses[-1] == 401:
                break
        assert statuses[-1] == 401, f"replica B still accepted the revoked key: {statuses}"
        # And a key created on A works on B straight away (misses are not cached).
        r = await http_a.post("/v1/admin/api-keys", json={"label": "new", "scopes": ["send"]},
                              headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 201, r.text
        assert await submit(http_b, r.json()["key"]) == 202
