"""schemathesis against ingest as a real process (real NATS, FerretDB, S3): every answer to
generated and mutated requests -- stateless and stateful -- is a documented status with the
documented content type and body shape, and none is a 5xx."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.services import ServiceProc
from secmsg.ingest.admin import create_api_key, create_tenant
from secmsg.ingest.ports import SCOPE_ADMIN, SCOPE_SEND
from tests.api_conformance import run_schemathesis
from tests.ingest.conftest import Ingest


async def test_ingest_answers_match_its_openapi(
        services: Callable[..., ServiceProc], mongo_db: Any, tmp_path: Path) -> None:
    ingest = services("ingest", SECMSG_INGEST_SEGMENT_SIZE="1024")
    await create_tenant(mongo_db, tenant_id="acme", name="Acme Medical")
    key = await create_api_key(mongo_db, tenant_id="acme", label="schemathesis",
                               scopes=(SCOPE_SEND, SCOPE_ADMIN))
    key_id = key.split("_")[1]  # smk_<key_id>_<secret>
    result = run_schemathesis(ingest.base_url, token=key, keep_key_id=key_id,
                              report_dir=tmp_path / "report", max_examples=25)
    print(result.stdout[-20000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:] + ingest.tail()


async def test_malformed_json_gets_the_documented_422(ingest: Ingest) -> None:
    """Bytes that are not UTF-8 used to get an undocumented 400 ("There was an error parsing
    the body"); broken JSON and wrong types a 422 whose body contradicted the schema."""
    spec = (await ingest.client.get("/openapi.json")).json()
    documented = spec["paths"]["/v1/messages/{message_id}"]["patch"]["responses"]["422"]
    assert documented["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    url = f"/v1/messages/{'a' * 32}"
    headers = {"Authorization": f"Bearer {ingest.api_key}", "Content-Type": "application/json"}
    for body, detail in ((b"\xff\xfe{", "body: not valid JSON"),
                         (b'{"expires_in_days": ', "body: not valid JSON"),
                         (b"{\"expires_at\": \"soon\"}", "body.expires_at: ")):
        r = await ingest.client.patch(url, content=body, headers=headers)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == "invalid_input"
        assert r.json()["detail"].startswith(detail), r.json()
        assert set(r.json()) == {"error", "detail"}


async def test_the_documented_rfc822_example_is_accepted(ingest: Ingest) -> None:
    """The example in the OpenAPI document is what schemathesis' examples phase sends: it must
    be a message ingest takes (so the run covers the 200 path, not only refusals)."""
    spec = (await ingest.client.get("/openapi.json")).json()
    media = spec["paths"]["/v1/messages/rfc822"]["post"]["requestBody"]["content"]
    example = media["message/rfc822"]["example"]
    r = await ingest.client.post("/v1/messages/rfc822", content=example.encode(),
                                 headers={"Authorization": f"Bearer {ingest.api_key}",
                                          "Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("message/rfc822")
    assert b"Subject: Lab results\r\n" in r.content
