"""``python -m secmsg.ingest`` as a real process: health, readiness and metrics on the internal
port only, OpenAPI, a real submission over TCP, and a clean exit on SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import httpx

from devstack.services import ServiceProc
from secmsg.ingest.admin import create_api_key, create_tenant
from tests.ingest.conftest import BOUNDARY, att, env_part, envelope, multipart


async def test_ingest_process_serves_and_stops_cleanly(
        services: Callable[..., ServiceProc], mongo_db: Any) -> None:
    await create_tenant(mongo_db, tenant_id="proc", name="Proc Org")
    key = await create_api_key(mongo_db, tenant_id="proc")
    svc = services("ingest")
    async with httpx.AsyncClient(base_url=svc.base_url, timeout=30) as http, \
            httpx.AsyncClient(base_url=svc.internal_url, timeout=30) as internal:
        assert (await internal.get("/healthz")).status_code == 200
        r = await internal.get("/readyz")
        assert r.status_code == 200, r.text
        # The public port (the one the Ingress exposes) has no probes and no metrics.
        for path in ("/metrics", "/readyz", "/healthz"):
            r = await http.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
        body = multipart([env_part(envelope()), att("f.bin", b"\x00\x01" * 70_000)])
        r = await http.post("/v1/messages", content=body, headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert r.status_code == 202, r.text
        r = await http.post("/v1/messages", content=body,
                            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert (await http.get("/nope")).json()["error"] == "not_found"

        metrics = (await internal.get("/metrics")).text
        assert 'secmsg_ingest_http_requests_total{method="POST",route="/v1/messages",' \
               'status="202"} 1.0' in metrics
        assert "secmsg_ingest_bytes_in_total" in metrics
        assert "secmsg_ingest_encryption_seconds_total" in metrics

        spec = (await http.get("/openapi.json")).json()
        op = spec["paths"]["/v1/messages"]["post"]
        assert "multipart/form-data" in op["requestBody"]["content"]
        assert {"202", "400", "401", "413", "415", "503"} <= set(op["responses"])
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGTERM)
    # uvicorn finishes in-flight work, runs the shutdown, then re-raises SIGTERM on itself.
    assert svc.proc.wait(25) in (0, -signal.SIGTERM)
    log = svc.tail(200)
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
