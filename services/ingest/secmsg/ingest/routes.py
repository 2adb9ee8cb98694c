"""HTTP routes of ingest: thin -- authenticate, hand the body stream to the service, answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from secmsg.ingest import metrics, service
from secmsg.ingest.auth import authenticate, bearer
from secmsg.ingest.envelope import ENVELOPE_EXAMPLE, Envelope
from secmsg.ingest.ports import SCOPE_SEND
from secmsg.ingest.wiring import Deps, get_deps
from secmsg.shared.errors import InvalidInput, TooManyRequests

router = APIRouter()


class MessageAccepted(BaseModel):
    message_id: str = Field(description="32 hex characters",
                            examples=["3f2b9c1e8d7a4b6f9e0d1c2b3a495867"])


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code", examples=["invalid_input"])
    detail: str = Field(description="what went wrong, in a sentence")


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_REQUEST_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["envelope"],
            "properties": {
                "envelope": {**Envelope.model_json_schema(by_alias=True),
                             "description": "JSON, the FIRST part: sender, recipients, subject, "
                                            "text and/or html body, expiry, disclaimer"},
                "attachment": {"type": "array", "items": {"type": "string", "format": "binary"},
                               "description": "zero or more files, each its own part named "
                                              "'attachment' with a filename and Content-Type"},
            },
        },
        "encoding": {"envelope": {"contentType": "application/json"},
                     "attachment": {"contentType": "application/octet-stream"}},
        "example": {"envelope": ENVELOPE_EXAMPLE},
    }},
}


async def _counted(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            metrics.BYTES_IN.inc(len(chunk))
            yield chunk
    except ClientDisconnect:
        raise InvalidInput("the client disconnected before the body was complete") from None


@router.post(
    "/v1/messages", status_code=202, response_model=MessageAccepted,
    summary="Submit a secure message",
    description=(
        "Streams the body and attachments through encryption into the object store and "
        "queues the message for delivery. Parts: first `envelope` (JSON), then any number of "
        "`attachment` file parts. Nothing is stored if the request is refused.\n\n"
        "`Idempotency-Key` (optional, up to 200 printable characters): a retry with the same "
        "key returns the same `message_id` and creates nothing new; 409 while the first "
        "attempt is still running."),
    responses={
        400: _err("malformed multipart body, envelope or header value"),
        401: _err("missing, unknown or revoked API key"),
        403: _err("the API key lacks the 'send' scope (an admin-only key)"),
        409: _err("a submission with this Idempotency-Key is in progress"),
        413: _err("over the tenant's size, recipient or attachment limit"),
        415: _err("the body is not multipart/form-data"),
        429: _err("too many submissions in progress on this instance"),
        503: _err("object store, database or event bus unavailable; retry later"),
    },
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def submit_message(
    request: Request,
    deps: Annotated[Deps, Depends(get_deps)],
    auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="Makes retries safe (≤ 200 printable chars)",
        examples=["order-4711-attempt"])] = None,
) -> JSONResponse:
    creds = await authenticate(deps.tenants, auth, scope=SCOPE_SEND)
    if deps.uploads.locked():
        raise TooManyRequests("too many submissions in progress; retry shortly")
    length = request.headers.get("content-length")
    async with deps.uploads:
        accepted = await service.submit_message(
            creds=creds, content_type=request.headers.get("content-type"),
            content_length=int(length) if length and length.isdigit() else None,
            idempotency_key=idempotency_key, body=_counted(request), blobs=deps.blobs,
            idem=deps.idempotency, events=deps.events, key_ring=deps.key_ring,
            opts=deps.options)
    headers = {} if accepted.created else {"Idempotent-Replayed": "true"}
    return JSONResponse({"message_id": accepted.message_id}, status_code=202, headers=headers)
