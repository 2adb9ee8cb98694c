"""Submitting a message (JSON + files, or a whole RFC 5322 message): thin -- authenticate,
hand the body stream to the service, answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from secmsg.ingest import audit, metrics, rfc822, service
from secmsg.ingest.access import SendGuard
from secmsg.ingest.auth import authenticate, bearer
from secmsg.ingest.envelope import ENVELOPE_EXAMPLE, Envelope
from secmsg.ingest.ports import SCOPE_SEND
from secmsg.ingest.routes.common import origin
from secmsg.ingest.wiring import Deps, get_deps
from secmsg.shared.errors import (
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from secmsg.shared.http_errors import ErrorBody

router = APIRouter()


class MessageAccepted(BaseModel):
    message_id: str = Field(description="32 hex characters",
                            examples=["3f2b9c1e8d7a4b6f9e0d1c2b3a495867"])


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# OpenAPI links: what a client (and schemathesis' stateful phase) can do with the new id.
_MESSAGE_LINKS = {
    name: {"operationId": op, "parameters": {"message_id": "$response.body#/message_id"}}
    for name, op in (("GetSlip", "delivery_slip_v1_messages__message_id__slip_get"),
                     ("ChangeExpiry", "patch_message_v1_messages__message_id__patch"),
                     ("Recall", "recall_message_v1_messages__message_id__recall_post"),
                     ("Revoke", "revoke_message_v1_messages__message_id__revoke_post"))}


def _envelope_schema() -> dict[str, Any]:
    """The envelope's JSON Schema, saying that the addresses are email addresses (the model
    checks them itself, to answer 400 naming the field)."""
    schema = Envelope.model_json_schema(by_alias=True)
    props = schema.get("properties", {})
    if props.get("from", {}).get("type") == "string":
        props["from"]["format"] = "email"
    for name in ("to", "cc", "bcc"):
        items = props.get(name, {}).get("items", {})
        if items.get("type") == "string":
            items["format"] = "email"
    return schema


_REQUEST_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["envelope"],
            "additionalProperties": False,  # any other part is refused (400)
            "properties": {
                "envelope": {**_envelope_schema(),
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


_IDEMPOTENCY_KEY = "Idempotency-Key"
_IDEMPOTENCY_KEY_HELP = "Makes retries safe (≤ 200 printable chars)"
# ``submit_message``'s header, as FastAPI documents a ``Header()`` parameter (the rfc822
# route declares it as one).
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": _IDEMPOTENCY_KEY, "in": "header", "required": False,
    "description": _IDEMPOTENCY_KEY_HELP,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
               "description": _IDEMPOTENCY_KEY_HELP,
               "examples": ["order-4711-attempt"], "title": _IDEMPOTENCY_KEY},
}

RFC822_EXAMPLE = "\r\n".join((
    "From: Alice Sender <alice@clinic.example>", "To: Bob <bob@example.org>",
    "Subject: Lab results", "Date: Thu, 03 Dec 2026 10:00:00 +0000",
    "Message-ID: <example-1@clinic.example>", "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8", "", "Your results are ready.", ""))


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
        "attempt is still running.\n\n"
        "Credentials: a tenant API key with the `send` scope (any `from` of the tenant), or a "
        "user token `smt_...` with the `send` scope: `from` must be the token's address, and "
        "if that address is not a tenant user (an external recipient replying) every "
        "recipient must be a tenant user or someone who sent this address a message through "
        "the tenant. `in_reply_to` names the message answered (recorded as `message.replied` "
        "in its audit trail); `bcc` recipients are notified but never shown to the others."),
    responses={
        202: {"description": "accepted: stored encrypted and queued for delivery",
              "links": _MESSAGE_LINKS},
        400: _err("malformed multipart body, envelope or header value; an in_reply_to that "
                  "names no message the caller may answer"),
        401: _err("missing, unknown, expired or revoked API key or token"),
        403: _err("the credentials lack the 'send' scope; a token sending from another "
                  "address; an external replier writing to someone not allowed (named)"),
        409: _err("a submission with this Idempotency-Key is in progress"),
        413: _err("over the tenant's size, recipient or attachment limit"),
        415: _err("the body is not multipart/form-data"),
        429: _err("too many submissions in progress on this instance or of this tenant"),
        503: _err("object store, database or event bus unavailable; retry later"),
    },
    openapi_extra={"requestBody": _REQUEST_BODY, "security": [{bearer.scheme_name: []}],
                   "parameters": [_IDEMPOTENCY_KEY_PARAMETER]},
)
async def submit_message(request: Request) -> Response:
    # The hot route takes the request alone and reads its credentials, header and wiring
    # itself (the same ``bearer`` and ``Deps`` as every other route; documented above through
    # ``openapi_extra``): FastAPI's dependency solving and response validation were ~10 % of
    # a small submission's CPU (docs/cost.md).
    deps: Deps = request.app.state.deps
    creds = await authenticate(deps.tenants, await bearer(request), scope=SCOPE_SEND)
    idempotency_key = request.headers.get(_IDEMPOTENCY_KEY)
    length = request.headers.get("content-length")
    guard = SendGuard(creds=creds, messages=deps.messages, access=deps.access)
    with deps.uploads.hold(creds.tenant.tenant_id):
        accepted = await service.submit_message(
            creds=creds, content_type=request.headers.get("content-type"),
            content_length=int(length) if length and length.isdigit() else None,
            idempotency_key=idempotency_key, body=_counted(request), blobs=deps.blobs,
            idem=deps.idempotency, events=deps.events, key_ring=deps.key_ring,
            opts=deps.options, check=guard)
    if accepted.created and guard.in_reply_to is not None:
        await audit.record(events=deps.events, creds=creds, action="message.replied",
                           origin=origin(request), message_id=guard.in_reply_to,
                           detail={"reply_id": accepted.message_id})
    return Response(MessageAccepted(message_id=accepted.message_id).model_dump_json(),
                    status_code=202, media_type="application/json",
                    headers=None if accepted.created else {"Idempotent-Replayed": "true"})


@router.post(
    "/v1/messages/rfc822", status_code=200,
    response_class=Response,
    summary="Submit a whole RFC 5322 message; get the placeholder message back",
    description=(
        "Body: a complete message (`Content-Type: message/rfc822`), as a mail server or "
        "Outlook/Exchange transport rule would relay it. Its bodies, attachments and the raw "
        "message are stored encrypted, like `POST /v1/messages`. The answer is the placeholder "
        "to deliver instead: every original header byte for byte (except `MIME-Version`, "
        "`Content-Type`, `Content-Transfer-Encoding` and any `X-Secure-Message-*`), plus "
        "`X-Secure-Message-Id`/`-Url`, and the rendered notification as body. The whole "
        "message is read into memory, capped at the tenant's message size."),
    responses={
        200: {"content": {"message/rfc822": {}}, "description": "the placeholder message"},
        400: _err("malformed message: no header/body separator, no From, no recipients, "
                  "broken MIME structure or multiparts nested more than 64 levels deep; a "
                  "header line with a bare CR, a bare LF or a NUL; a From/To/Cc/Bcc field "
                  "that does not parse cleanly; a Subject, display name or threading field "
                  "with a control character other than TAB (the named header in `detail`)"),
        401: _err("missing, unknown or revoked API key"),
        403: _err("the API key lacks the 'send' scope (an admin-only key)"),
        409: _err("a submission with this Idempotency-Key is in progress"),
        413: _err("over the tenant's size, recipient or attachment limit"),
        415: _err("the body is not message/rfc822"),
        429: _err("too many submissions in progress on this instance or of this tenant"),
        503: _err("object store, database or event bus unavailable; retry later"),
    },
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"message/rfc822": {
                                       "schema": {"type": "string", "format": "binary"},
                                       "example": RFC822_EXAMPLE}}}},
)
async def submit_rfc822(
    request: Request,
    deps: Annotated[Deps, Depends(get_deps)],
    auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    idempotency_key: Annotated[str | None, Header(
        alias=_IDEMPOTENCY_KEY, description=_IDEMPOTENCY_KEY_HELP)
    ] = None,
) -> Response:
    creds = await authenticate(deps.tenants, auth, scope=SCOPE_SEND)
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != rfc822.CONTENT_TYPE:
        raise UnsupportedMediaType("the body must be a whole message with Content-Type: "
                                   "message/rfc822")
    cap = creds.tenant.max_message_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise PayloadTooLarge(f"the message ({length} bytes) exceeds this tenant's message "
                              f"size limit of {cap} bytes")
    with deps.uploads.hold(creds.tenant.tenant_id):
        raw = await rfc822.read_capped(_counted(request), cap)
        parsed = rfc822.parse(raw, creds.tenant)
        await SendGuard(creds=creds, messages=deps.messages, access=deps.access)(
            parsed.sender, parsed.recipients, None)
        accepted, expires_at = await rfc822.store(
            creds=creds, parsed=parsed, idempotency_key=idempotency_key, blobs=deps.blobs,
            idem=deps.idempotency, events=deps.events, key_ring=deps.key_ring,
            opts=deps.options)
    body = await rfc822.placeholder(parsed=parsed, creds=creds, message_id=accepted.message_id,
                                    expires_at=expires_at, public_url=deps.public_url,
                                    templates=deps.templates)
    headers = {"X-Secure-Message-Id": accepted.message_id}
    if not accepted.created:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, status_code=200, media_type=rfc822.CONTENT_TYPE, headers=headers)
