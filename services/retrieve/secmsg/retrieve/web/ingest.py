"""Submitting a webmail message to ingest, streaming the attachments through.

The browser's upload is parsed by Starlette, which spools each file part to a temporary file
beyond 1 MiB; from there the request to ingest is generated chunk by chunk, so an attachment
never sits in memory whole. ingest does every check (recipients allowed for this sender,
limits, header safety); its ``detail`` sentence is shown to the user as is.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

CHUNK = 64 * 1024


class Upload(Protocol):
    @property
    def filename(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...

    async def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class IngestRefused(Exception):
    status: int
    code: str
    detail: str


def _header_safe(value: str) -> str:
    return "".join("%22" if c == '"' else "_" if c in "\r\n\x00\\" else c for c in value)


async def _multipart(boundary: str, envelope: dict[str, Any],
                     files: Sequence[Upload]) -> AsyncIterator[bytes]:
    b = boundary.encode()
    yield (b"--" + b + b'\r\nContent-Disposition: form-data; name="envelope"\r\n'
           b"Content-Type: application/json\r\n\r\n" + json.dumps(envelope).encode() + b"\r\n")
    for f in files:
        name = _header_safe(f.filename or "attachment")
        ctype = _header_safe(f.content_type or "application/octet-stream")
        yield (b"--" + b + b'\r\nContent-Disposition: form-data; name="attachment"; '
               b'filename="' + name.encode() + b'"\r\nContent-Type: ' + ctype.encode()
               + b"\r\n\r\n")
        while chunk := await f.read(CHUNK):
            yield chunk
        yield b"\r\n"
    yield b"--" + b + b"--\r\n"


async def submit(*, http: httpx.AsyncClient, ingest_url: str, token: str,
                 envelope: dict[str, Any], files: Sequence[Upload]) -> str:
    """POST /v1/messages; the new message id, or ``IngestRefused`` with ingest's reason."""
    boundary = "secmsg-" + secrets.token_hex(16)
    try:
        r = await http.post(
            ingest_url.rstrip("/") + "/v1/messages",
            content=_multipart(boundary, envelope, files),
            headers={"Authorization": f"Bearer {token}",
                     "Content-Type": f"multipart/form-data; boundary={boundary}"})
    except httpx.HTTPError:
        raise IngestRefused(503, "unavailable",
                            "the message service is unreachable; try again shortly") from None
    if r.status_code == 202:
        return str(r.json()["message_id"])
    raise _refused(r)


def _refused(r: httpx.Response) -> IngestRefused:
    try:
        body = r.json()
        return IngestRefused(r.status_code, str(body.get("error", "error")),
                             str(body.get("detail", "the message was refused")))
    except ValueError:
        return IngestRefused(r.status_code, "error", "the message service refused the request")


async def slip(*, http: httpx.AsyncClient, ingest_url: str, token: str,
               message_id: str) -> dict[str, Any]:
    try:
        r = await http.get(ingest_url.rstrip("/") + f"/v1/messages/{message_id}/slip",
                           headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        raise IngestRefused(503, "unavailable",
                            "the message service is unreachable; try again shortly") from None
    if r.status_code == 200:
        data: dict[str, Any] = r.json()
        return data
    raise _refused(r)
