"""Streamed, decrypted downloads: Range forms, headers, tampering, hostile filenames, audit."""

from __future__ import annotations

import os
from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.retrieve.headers import content_disposition
from secmsg.shared.blobstore import CHUNK
from secmsg.shared.crypto import TAG_SIZE
from secmsg.shared.errors import IntegrityError
from secmsg.shared.settings import CommonSettings
from tests.retrieve.helpers import SEGMENT, Running, Seeder, audit_events, bearer, sign_in

SIZE = 5 * SEGMENT + 123  # six segments, the last one short
DATA = os.urandom(SIZE)


@pytest.fixture
async def signed(app: Running, seeder: Seeder, sink: Sink) -> tuple[Running, Any, str, str]:
    msg = await seeder.message(attachments=[("report.bin", "application/octet-stream", DATA)])
    token = await sign_in(app.client, sink)
    return app, msg, next(iter(msg.attachments)), token


def url(msg: Any, object_id: str) -> str:
    return f"/v1/messages/{msg.message_id}/attachments/{object_id}"


async def test_full_download_is_byte_identical(signed: Any, settings: CommonSettings) -> None:
    app, msg, oid, token = signed
    r = await app.client.get(url(msg, oid), headers={**bearer(token), "User-Agent": "dl/1"})
    assert r.status_code == 200
    assert r.content == DATA
    h = r.headers
    assert h["content-length"] == str(SIZE)
    assert h["accept-ranges"] == "bytes"
    assert h["content-type"] == "application/octet-stream"
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    assert oid in h["etag"]
    assert h["content-disposition"] == \
        "attachment; filename=\"report.bin\"; filename*=UTF-8''report.bin"
    assert "content-range" not in h

    [ev] = [e for e in await audit_events(settings) if e["kind"] == "attachment.downloaded"]
    assert (ev["object_id"], ev["range_start"], ev["range_end"]) == (oid, 0, SIZE - 1)
    assert ev["recipient"] == "bob@example.org" and ev["user_agent"] == "dl/1"


RANGES = [
    ("bytes=0-0", 0, 0),
    ("bytes=10-99", 10, 99),  # inside one segment
    (f"bytes={SEGMENT - 1}-{SEGMENT}", SEGMENT - 1, SEGMENT),  # straddles a boundary
    (f"bytes={SEGMENT}-{2 * SEGMENT - 1}", SEGMENT, 2 * SEGMENT - 1),  # exactly one segment
    (f"bytes=100-{3 * SEGMENT + 7}", 100, 3 * SEGMENT + 7),  # several segments
    (f"bytes={4 * SEGMENT + 5}-", 4 * SEGMENT + 5, SIZE - 1),  # open-ended into the last
    ("bytes=-1", SIZE - 1, SIZE - 1),
    ("bytes=-200", SIZE - 200, SIZE - 1),  # suffix across the last boundary
    (f"bytes=-{SIZE + 50}", 0, SIZE - 1),  # suffix longer than the object
    (f"bytes=5000-{SIZE * 3}", 5000, SIZE - 1),  # end clipped to the object
    (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
]


@pytest.mark.parametrize(("header", "start", "end"), RANGES)
async def test_single_range_is_206(signed: Any, header: str, start: int, end: int) -> None:
    app, msg, oid, token = signed
    r = await app.client.get(url(msg, oid), headers={**bearer(token), "Range": header})
    assert r.status_code == 206, r.text
    assert r.content == DATA[start:end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}",
                                    "bytes=-0"])
async def test_unsatisfiable_range_is_416(signed: Any, header: str) -> None:
    app, msg, oid, token = signed
    r = await app.client.get(url(msg, oid), headers={**bearer(token), "Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert r.json()["error"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=5-2", "items=0-5", "bytes=abc",
                                    "bytes=-", "bytes= 1 - 2x"])
async def test_multi_or_invalid_range_serves_whole(signed: Any, header: str) -> None:
    app, msg, oid, token = signed
    r = await app.client.get(url(msg, oid), headers={**bearer(token), "Range": header})
    assert r.status_code == 200 and r.content == DATA
    assert "content-range" not in r.headers


async def test_if_range_mismatch_serves_whole(signed: Any) -> None:
    app, msg, oid, token = signed
    etag = (await app.client.get(url(msg, oid), headers=bearer(token))).headers["etag"]
    same = await app.client.get(url(msg, oid), headers={**bearer(token), "Range": "bytes=0-9",
                                                        "If-Range": etag})
    assert same.status_code == 206 and same.content == DATA[:10]
    other = await app.client.get(url(msg, oid), headers={**bearer(token),
                                                         "Range": "bytes=0-9",
                                                         "If-Range": '"stale"'})
    assert other.status_code == 200 and other.content == DATA


async def test_range_audit_records_the_range(signed: Any, settings: CommonSettings) -> None:
    app, msg, oid, token = signed
    await app.client.get(url(msg, oid), headers={**bearer(token), "Range": "bytes=-200"})
    [ev] = [e for e in await audit_events(settings) if e["kind"] == "attachment.downloaded"]
    assert (ev["range_start"], ev["range_end"]) == (SIZE - 200, SIZE - 1)


async def test_tampered_segment_refused_before_any_byte(signed: Any, seeder: Seeder) -> None:
    app, msg, oid, token = signed
    # One flipped bit in segment 3; the first S3 chunk holds it, so nothing is sent at all.
    await seeder.tamper(msg.key(oid), 3 * (SEGMENT + TAG_SIZE) + 10)
    r = await app.client.get(url(msg, oid), headers=bearer(token))
    assert r.status_code == 500 and r.json()["error"] == "integrity_error"
    # A range that avoids the tampered segment still works; one that touches it does not.
    ok = await app.client.get(url(msg, oid), headers={**bearer(token), "Range": "bytes=0-99"})
    assert ok.status_code == 206 and ok.content == DATA[:100]
    r = await app.client.get(url(msg, oid),
                             headers={**bearer(token), "Range": f"bytes={3 * SEGMENT}-"})
    assert r.status_code == 500 and r.json()["error"] == "integrity_error"
    assert DATA[3 * SEGMENT:3 * SEGMENT + 50] not in r.content


async def test_tamper_after_first_chunk_aborts_mid_stream(app: Running, seeder: Seeder,
                                                          sink: Sink) -> None:
    big = os.urandom(CHUNK + 300 * SEGMENT)  # more than one S3 read chunk
    msg = await seeder.message(attachments=[("big.bin", "application/octet-stream", big)])
    oid = next(iter(msg.attachments))
    token = await sign_in(app.client, sink)
    last = len(big) // SEGMENT - 1
    await seeder.tamper(msg.key(oid), last * (SEGMENT + TAG_SIZE) + 3)
    # Headers are out when the bad segment is met: the app raises so the server drops the
    # connection (Content-Length then tells the client the body is incomplete).
    # (Starlette re-raises it as "response already started"; the cause is what matters.)
    with pytest.raises(Exception) as info:
        await app.client.get(url(msg, oid), headers=bearer(token))
    err: BaseException | None = info.value
    while err is not None and not isinstance(err, IntegrityError):
        err = err.__cause__
    assert isinstance(err, IntegrityError)


async def test_tampered_first_segment_is_a_clean_500(signed: Any, seeder: Seeder) -> None:
    app, msg, oid, token = signed
    await seeder.tamper(msg.key(oid), 5)
    r = await app.client.get(url(msg, oid), headers=bearer(token))
    assert r.status_code == 500
    assert r.json() == {"error": "integrity_error",
                        "detail": "stored content failed its integrity check"}


async def test_truncated_object_is_refused(signed: Any, seeder: Seeder) -> None:
    app, msg, oid, token = signed
    blob = await seeder.blobs.get_bytes(msg.key(oid))
    await seeder.blobs.put_bytes(msg.key(oid), blob[: 5 * (SEGMENT + TAG_SIZE)])
    r = await app.client.get(url(msg, oid),
                             headers={**bearer(token), "Range": f"bytes={5 * SEGMENT}-"})
    assert r.status_code == 500 and r.json()["error"] == "integrity_error"
    assert DATA[5 * SEGMENT:] not in r.content


HOSTILE = [
    ("../../etc/passwd", 'filename="passwd"', "filename*=UTF-8''passwd"),
    ("..\\..\\boot.ini", 'filename="boot.ini"', "filename*=UTF-8''boot.ini"),
    ("evil\r\nSet-Cookie: a=b.txt", 'filename="evilSet-Cookie: a=b.txt"',
     "filename*=UTF-8''evilSet-Cookie%3A%20a%3Db.txt"),
    ("résumé 東京.pdf", 'filename="resume __.pdf"',
     "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%9D%B1%E4%BA%AC.pdf"),
    ('x\\.bashrc', 'filename="bashrc"', "filename*=UTF-8''bashrc"),
    ('a"b;c%d.txt', 'filename="a_b_c_d.txt"', "filename*=UTF-8''a%22b%3Bc%25d.txt"),
    ('say "hi"; x=1.txt', 'filename="say _hi__ x=1.txt"',
     "filename*=UTF-8''say%20%22hi%22%3B%20x%3D1.txt"),
    ("..", 'filename="download"', "filename*=UTF-8''download"),
    ("\u202egnp.exe", 'filename="gnp.exe"', "filename*=UTF-8''gnp.exe"),
]


@pytest.mark.parametrize(("name", "ascii_part", "utf8_part"), HOSTILE)
def test_content_disposition_is_safe(name: str, ascii_part: str, utf8_part: str) -> None:
    value = content_disposition(name)
    assert value == f"attachment; {ascii_part}; {utf8_part}"
    assert all(32 <= ord(c) < 127 for c in value)


async def test_hostile_filenames_over_http(app: Running, seeder: Seeder, sink: Sink) -> None:
    names = [n for n, _, _ in HOSTILE]
    msg = await seeder.message(attachments=[(n, "text/html\r\nX-Evil: 1", b"<script>1</script>")
                                            for n in names])
    token = await sign_in(app.client, sink)
    by_name = {o["filename"]: o["object_id"] for o in msg.doc["objects"]
               if o["role"] == "attachment"}
    for name, ascii_part, utf8_part in HOSTILE:
        r = await app.client.get(url(msg, by_name[name]), headers=bearer(token))
        assert r.status_code == 200
        assert r.headers["content-disposition"] == f"attachment; {ascii_part}; {utf8_part}"
        assert "set-cookie" not in r.headers and "x-evil" not in r.headers
        assert r.headers["content-type"] == "application/octet-stream"
        assert "sandbox" in r.headers["content-security-policy"]


async def test_empty_attachment_and_bodies_not_downloadable(app: Running, seeder: Seeder,
                                                            sink: Sink) -> None:
    msg = await seeder.message(attachments=[("empty.txt", "text/plain", b"")])
    token = await sign_in(app.client, sink)
    oid = next(iter(msg.attachments))
    r = await app.client.get(url(msg, oid), headers=bearer(token))
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
    r = await app.client.get(url(msg, oid), headers={**bearer(token), "Range": "bytes=0-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"
    text_oid = next(o["object_id"] for o in msg.doc["objects"] if o["role"] == "text")
    r = await app.client.get(url(msg, text_oid), headers=bearer(token))
    assert r.status_code == 404
