"""Every refusal: a clear 4xx JSON body, and nothing left behind (no object, no event)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from secmsg.ingest.admin import revoke_api_key
from tests.ingest.conftest import BOUNDARY, Ingest, Part, att, env_part, envelope, multipart

PAST = (datetime.now(UTC) - timedelta(days=1)).isoformat()
FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()
OK_ATT = att("a.txt", b"x" * 3000)  # uploaded before the fault: must be deleted again

CASES: dict[str, tuple[list[Part] | bytes, int, str]] = {
    "no recipients": ([env_part(envelope(to=[]))], 400, "invalid_input"),
    "malformed to": ([env_part(envelope(to=["not-an-address"]))], 400, "invalid_input"),
    "malformed cc": ([env_part(envelope(cc=["a@@b"]))], 400, "invalid_input"),
    "malformed from": ([env_part(envelope(**{"from": "alice"}))], 400, "invalid_input"),
    "missing from": ([env_part(envelope(**{"from": None}))], 400, "invalid_input"),
    "CRLF in subject": ([env_part(envelope(subject="hi\r\nBcc: x@evil.example"))], 400,
                        "invalid_input"),
    "LF in to": ([env_part(envelope(to=["bob@example.org\nBcc: x@evil.example"]))], 400,
                 "invalid_input"),
    "NUL in from": ([env_part(envelope(**{"from": "alice@acme.example\x00"}))], 400,
                    "invalid_input"),
    "CR in cc": ([env_part(envelope(cc=["c@example.org\r"]))], 400, "invalid_input"),
    "LF in disclaimer": ([env_part(envelope(disclaimer="a\nb"))], 400, "invalid_input"),
    "NUL in filename": ([env_part(envelope()), OK_ATT, att("a\x00.txt", b"x")], 400,
                        "invalid_input"),
    "too many recipients": ([env_part(envelope(to=[f"r{i}@example.org" for i in range(4)]))],
                            413, "payload_too_large"),
    "too many attachments": ([env_part(envelope())] + [OK_ATT] * 5, 413, "payload_too_large"),
    "over the size limit": ([env_part(envelope()), OK_ATT, att("big", b"y" * 210_000)], 413,
                            "payload_too_large"),
    "no body": ([env_part(envelope(text=None))], 400, "invalid_input"),
    "missing envelope": ([att("a.txt", b"x")], 400, "invalid_input"),
    "envelope not first": ([att("a.txt", b"x"), env_part(envelope())], 400, "invalid_input"),
    "two envelopes": ([env_part(envelope()), OK_ATT, env_part(envelope())], 400,
                      "invalid_input"),
    "unexpected part": ([env_part(envelope()), ("note", None, None, b"x")], 400,
                        "invalid_input"),
    "invalid JSON": ([env_part(b"{not json")], 400, "invalid_input"),
    "JSON not an object": ([env_part(b"[1, 2]")], 400, "invalid_input"),
    "unknown field": ([env_part(envelope(reply_to=["x@example.org"]))], 400, "invalid_input"),
    "to not a list": ([env_part(envelope(to="bob@example.org"))], 400, "invalid_input"),
    "expires_at in the past": ([env_part(envelope(expires_at=PAST))], 400, "invalid_input"),
    "two expiries": ([env_part(envelope(expires_at=FUTURE, expires_in_days=3))], 400,
                     "invalid_input"),
    "expires_in_days zero": ([env_part(envelope(expires_in_days=0))], 400, "invalid_input"),
    "envelope too large": ([env_part(envelope(text="z" * 5000))], 413, "payload_too_large"),
    "empty body": (b"", 400, "invalid_input"),
    "garbage": (b"this is not multipart at all", 400, "invalid_input"),
    "no closing boundary": (multipart([env_part(envelope()), OK_ATT], close=False), 400,
                            "invalid_input"),
    "part without name": (f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n"
                          f"--{BOUNDARY}--\r\n".encode(), 400, "invalid_input"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_refused_and_leaves_nothing(ingest: Ingest, case: str) -> None:
    parts, status, code = CASES[case]
    r = await ingest.post(parts)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    await ingest.assert_nothing_stored()


async def test_a_bad_address_is_refused_each_time_naming_its_field(ingest: Ingest) -> None:
    # Address checks are cached per string: the same bad address again, in another field,
    # is refused again and the answer names that field; one far over any address length
    # (never cached) too.
    for fields, named in (({"to": ["bob@@example.org"]}, "to[0]"),
                          ({"to": ["bob@example.org"], "cc": ["bob@@example.org"]}, "cc[0]"),
                          ({"from": "bob@@example.org"}, "from"),
                          ({"to": ["b" * 400 + "@example.org"]}, "to[0]")):
        r = await ingest.post([env_part(envelope(**fields))])
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith(f"{named} is not a valid email address"), r.text
    await ingest.assert_nothing_stored()
    r = await ingest.post([env_part(envelope(to=["bob@example.org"]))])
    assert r.status_code == 202, r.text


async def test_api_key_checks(ingest: Ingest) -> None:
    body = multipart([env_part(envelope())])
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    for headers in ({}, {"Authorization": "Bearer smk_00_nope"}, {"Authorization": "Basic x"},
                    {"Authorization": "Bearer "}):
        r = await ingest.client.post("/v1/messages", content=body,
                                     headers={"Content-Type": ctype, **headers})
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"
    key_id = ingest.api_key.split("_")[1]
    assert await revoke_api_key(ingest.db, key_id=key_id)
    r = await ingest.post([env_part(envelope())])
    assert r.status_code == 401
    await ingest.assert_nothing_stored()


async def test_wrong_content_type_is_415(ingest: Ingest) -> None:
    for ctype in ("application/json", "text/plain", "multipart/mixed; boundary=x"):
        r = await ingest.client.post(
            "/v1/messages", content=json.dumps(envelope()).encode(),
            headers={"Authorization": f"Bearer {ingest.api_key}", "Content-Type": ctype})
        assert r.status_code == 415, r.text
        assert r.json()["error"] == "unsupported_media_type"
    r = await ingest.client.post("/v1/messages", content=b"x", headers={
        "Authorization": f"Bearer {ingest.api_key}", "Content-Type": "multipart/form-data"})
    assert r.status_code == 400  # no boundary
    await ingest.assert_nothing_stored()


async def test_bad_idempotency_key_is_400(ingest: Ingest) -> None:
    for key in ("k" * 201, "tab\tinside", " leading"):
        r = await ingest.post([env_part(envelope())], **{"Idempotency-Key": key})
        assert r.status_code == 400, (key, r.text)
    await ingest.assert_nothing_stored()


async def test_early_reject_on_content_length(ingest: Ingest) -> None:
    async def never() -> object:
        raise AssertionError("the body must not be read")
        yield b""  # pragma: no cover

    r = await ingest.client.post("/v1/messages", content=never(), headers={
        **ingest.headers(), "Content-Length": str(50_000_000)})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    await ingest.assert_nothing_stored()


async def test_size_limit_cuts_the_upload_off_mid_stream(ingest: Ingest) -> None:
    sent = 0
    chunk = b"q" * 16_384
    head = multipart([env_part(envelope()), att("a.txt", b"x" * 2000)], close=False)
    head += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"attachment\"; "
             f"filename=\"huge.bin\"\r\n\r\n").encode()

    async def body():  # type: ignore[no-untyped-def]
        nonlocal sent
        yield head
        for _ in range(200):  # 3.2 MB, far beyond the 200 kB limit
            sent += 1
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    r = await ingest.client.post("/v1/messages", content=body(), headers=ingest.headers())
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert sent < 30, f"the server kept reading after the limit ({sent} chunks)"
    await ingest.assert_nothing_stored()


async def test_filenames_are_sanitised(ingest: Ingest) -> None:
    long = "é" * 200 + ".pdf"
    parts = [env_part(envelope()), att("../../etc/passwd", b"1"),
             att("C:\\Users\\x\\evil\x01name.txt", b"2"), att("", b"3"), att(long, b"4")]
    r = await ingest.post(parts)
    assert r.status_code == 202, r.text
    (ev,) = await ingest.events()
    names = [o.filename for o in ev.objects if o.role == "attachment"]
    assert names[:3] == ["passwd", "evilname.txt", "attachment"]
    assert len(names[3].encode()) <= 255 and names[3].endswith(".pdf")
