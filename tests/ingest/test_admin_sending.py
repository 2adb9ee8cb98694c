"""SMTP test (fixed categories against real SMTP sinks: accepted, refused port, 4xx, 5xx,
STARTTLS required but missing, AUTH bad, SSRF-refused hosts, rate limit) and the DKIM key."""

from __future__ import annotations

import base64
import gc
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization

from devstack.servers import free_port
from devstack.smtp_sink import Sink
from secmsg.ingest.admin import create_api_key
from secmsg.shared import mongo
from secmsg.shared.crypto import DKIM_KEY_PURPOSE
from tests.ingest.access_helpers import audits, auth
from tests.ingest.conftest import TENANT, Ingest


@pytest.fixture(autouse=True)
def loopback(env: dict[str, str], tls_cert: tuple[Path, Path],
             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECMSG_SMTP_ALLOWED_TARGETS", "127.0.0.0/8,::1")
    monkeypatch.setenv("SECMSG_SMTP_CA_FILE", str(tls_cert[0]))
    monkeypatch.setenv("SECMSG_INGEST_SMTP_TEST_PER_MINUTE", "3")
    monkeypatch.setenv("SECMSG_INGEST_SMTP_TEST_TIMEOUT_S", "3")


@pytest.fixture
async def admin(ingest: Ingest) -> str:
    return await create_api_key(ingest.db, tenant_id=TENANT, label="console", scopes=("admin",))


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"acme" and data.password == b"pw-1"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_sink(tls_cert: tuple[Path, Path]) -> Iterator[Sink]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
    s = Sink(free_port(), None, tls_context=ctx, require_starttls=True, authenticator=_auth,
             auth_require_tls=True)
    s.start()
    yield s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        s.stop()
        gc.collect()


async def own(ingest: Ingest, key: str, port: int, **extra: Any) -> None:
    r = await ingest.client.put("/v1/admin/smtp", headers=auth(key), json={
        "mode": "own", "host": "localhost", "port": port, "tls": "starttls", **extra})
    assert r.status_code == 200, r.text


async def probe(ingest: Ingest, key: str) -> Any:
    r = await ingest.client.post("/v1/admin/smtp/test", json={"to": "it@acme.example"},
                                 headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


async def test_platform_relay_ok_and_rejections(ingest: Ingest, admin: str, sink: Sink) -> None:
    assert await probe(ingest, admin) == {"ok": True, "mode": "platform", "reason": None}
    [mail] = sink.handler.messages
    assert mail.message["Subject"] == "secmsg SMTP test"
    assert "Acme Medical" in mail.message.get_content()
    sink.handler.faults.mode = "permfail"
    assert await probe(ingest, admin) == {"ok": False, "mode": "platform",
                                          "reason": "permanent_rejection"}
    sink.handler.faults.mode = "tempfail"
    body = await probe(ingest, admin)
    assert body["reason"] == "temporary_rejection" and "451" not in str(body)
    # The fourth test within the minute is refused.
    r = await ingest.client.post("/v1/admin/smtp/test", json={"to": "it@acme.example"},
                                 headers=auth(admin))
    assert r.status_code == 429
    r = await ingest.client.post("/v1/admin/smtp/test", json={"to": "it@acme.example"},
                                 headers=auth(ingest.api_key))
    assert r.status_code == 403


async def test_own_server_categories(ingest: Ingest, admin: str, sink: Sink,
                                     tls_sink: Sink) -> None:
    await own(ingest, admin, free_port())
    assert (await probe(ingest, admin))["reason"] == "connection_refused"
    await own(ingest, admin, sink.port)  # plain server: STARTTLS required, not offered
    assert await probe(ingest, admin) == {"ok": False, "mode": "own",
                                          "reason": "tls_unavailable"}
    assert sink.handler.messages == []
    await own(ingest, admin, tls_sink.port, username="acme", password="wrong")
    assert (await probe(ingest, admin))["reason"] == "auth_failed"


async def test_own_server_ok_with_tls_and_auth(ingest: Ingest, admin: str,
                                               tls_sink: Sink) -> None:
    await own(ingest, admin, tls_sink.port, username="acme", password="pw-1")
    assert await probe(ingest, admin) == {"ok": True, "mode": "own", "reason": None}
    assert len(tls_sink.handler.messages) == 1


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.1", "0x7f000001", "[fe80::1]"])
async def test_hostile_hosts_are_never_connected(ingest: Ingest, admin: str, sink: Sink,
                                                 host: str) -> None:
    # Stored behind the API's back (the API refuses them at save): the test checks again.
    await ingest.db[mongo.TENANTS].update_one({"_id": TENANT}, {"$set": {"smtp": {
        "mode": "own", "host": host, "port": sink.port, "tls": "starttls"}}})
    assert await probe(ingest, admin) == {"ok": False, "mode": "own",
                                          "reason": "blocked_target"}
    assert sink.handler.connections == 0


async def test_dkim(ingest: Ingest, admin: str) -> None:
    r = await ingest.client.get("/v1/admin/dkim", headers=auth(admin))
    assert r.status_code == 404
    body = {"domain": "Clinic.Example", "selector": "secmsg1",
            "from_address": "notify@clinic.example"}
    r = await ingest.client.put("/v1/admin/dkim", json=body, headers=auth(admin))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dns_name"] == "secmsg1._domainkey.clinic.example"
    assert out["dns_value"].startswith("v=DKIM1; k=rsa; p=")
    assert "PRIVATE" not in r.text
    doc = (await ingest.db[mongo.TENANTS].find_one({"_id": TENANT}))["dkim"]
    pem = ingest.settings.key_ring.open_secret(TENANT, DKIM_KEY_PURPOSE,
                                               doc["private_key_sealed"])
    key = serialization.load_pem_private_key(pem.encode(), None)
    assert key.key_size == 2048  # type: ignore[union-attr]
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert out["dns_value"].endswith(base64.b64encode(public).decode())
    got = (await ingest.client.get("/v1/admin/dkim", headers=auth(admin))).json()
    assert got == out

    r = await ingest.client.put("/v1/admin/dkim", json={**body, "from_address": "x@other.example"},
                                headers=auth(admin))
    assert r.status_code == 400 and "DKIM alignment" in r.json()["detail"], r.text
    # Names are checked by the request model (secmsg.shared.dnsnames): 422, saying what is wrong.
    for field, value, problem in (
            ("domain", "no_dots", "is not a fully qualified domain name: '_' in the label"),
            ("domain", "clinic", "is not a fully qualified domain name: one label only"),
            ("domain", "a..clinic.example", "an empty label"),
            ("selector", "bad selector", "is not a DNS name: ' ' in the label")):
        r = await ingest.client.put("/v1/admin/dkim", json={**body, field: value},
                                    headers=auth(admin))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"body.{field}: ") and problem in r.text, r.text
    assert (await ingest.client.get("/v1/admin/dkim", headers=auth(admin))).json() == out
    assert (await ingest.client.delete("/v1/admin/dkim", headers=auth(admin))).status_code == 204
    assert (await ingest.client.delete("/v1/admin/dkim", headers=auth(admin))).status_code == 404
    changes = [e.detail["change"] for e in await audits(ingest.settings, "dkim.changed")]
    assert changes == ["key_generated", "removed"]
