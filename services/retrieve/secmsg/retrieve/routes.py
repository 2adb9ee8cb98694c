"""HTTP surface of retrieve: thin wrappers that decode, call ``service`` and shape responses."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from secmsg.retrieve import accounts, service
from secmsg.retrieve.deps import (
    ClientIpDep,
    DepsDep,
    SessionDep,
    TokenDep,
    UserAgentDep,
    account_ports,
)
from secmsg.retrieve.headers import content_disposition, safe_content_type
from secmsg.retrieve.ports import MessageRecord
from secmsg.retrieve.service import CodeRequest, NewSession
from secmsg.shared import logs
from secmsg.shared.http_errors import ErrorBody
from secmsg.shared.subjects import TENANT_ID_RE

TENANT_PATTERN = TENANT_ID_RE.pattern
ID_PATTERN = r"^[0-9a-f]{32}$"
log = logging.getLogger(__name__)
EXAMPLE_ID = "3f2a9c1e5b7d4e8fa0b1c2d3e4f50617"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Invalid input, e.g. an address that is not an email address",
            401: "Not signed in, or the session expired",
            404: "Not there, or not yours (the two are indistinguishable)",
            416: "Range outside the content", 422: "Request validation failed",
            429: "Rate limited; see Retry-After",
            503: "A dependency (database, object store, event bus) is unavailable"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


class CodeIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"tenant_id": "abc-medical", "email": "pat@example.org"}]})
    tenant_id: str = Field(pattern=TENANT_PATTERN, description="The tenant that sent the message")
    email: str = Field(min_length=3, max_length=320, description="The recipient's address")


class CodeRequestIn(CodeIn):
    purpose: Literal["signin", "register", "reset"] = Field(
        default="signin", description="What the emailed code is for (changes the wording)")


class CodeAccepted(BaseModel):
    status: Literal["sent_if_known"] = "sent_if_known"


class SessionIn(CodeIn):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"tenant_id": "abc-medical", "email": "pat@example.org",
                      "code": "04817263"}]})
    code: str = Field(min_length=1, max_length=32, description="The 8-digit emailed code")


class SessionOut(BaseModel):
    token: str = Field(description="Bearer token (also set as an HttpOnly cookie)")
    expires_at: datetime = Field(description="Absolute expiry; idle sessions end sooner")


class MessageSummary(BaseModel):
    id: str = Field(examples=[EXAMPLE_ID])
    sender: str
    subject: str
    received_at: datetime
    expires_at: datetime | None
    attachment_count: int
    total_size: int = Field(description="Plaintext bytes of bodies and attachments")


class MessageList(BaseModel):
    messages: list[MessageSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class RecipientOut(BaseModel):
    address: str
    kind: Literal["to", "cc", "bcc"] = Field(
        description="`bcc` only for the caller itself: nobody is shown another bcc recipient")


class AttachmentOut(BaseModel):
    object_id: str = Field(examples=[EXAMPLE_ID])
    filename: str | None
    content_type: str
    size: int


class MessageOut(MessageSummary):
    tenant_id: str
    recipients: list[RecipientOut]
    disclaimer: str | None
    text: str | None = Field(description="Plain-text body, if any")
    html: str | None = Field(description="HTML body as the sender wrote it (sanitize to show)")
    attachments: list[AttachmentOut]


def _correlate(message_id: str, tenant_id: str) -> None:
    # Each request runs in its own task, so these stay with this request's log lines.
    # Only a well-formed id: the path is the client's text, and logs must not carry it.
    if re.fullmatch(ID_PATTERN, message_id):
        logs.correlation_id.set(message_id)
    logs.tenant_id.set(tenant_id)


def _summary(r: MessageRecord) -> dict[str, Any]:
    return {"id": r.message_id, "sender": r.sender, "subject": r.subject,
            "received_at": r.received_at, "expires_at": r.expires_at,
            "attachment_count": r.attachment_count, "total_size": r.total_size}


api = APIRouter(prefix="/v1")


def _set_cookie(response: Response, deps: DepsDep, new: NewSession) -> None:
    response.set_cookie(deps.settings.cookie_name, new.token,
                        max_age=deps.settings.session_max_s, path="/", secure=True,
                        httponly=True, samesite="strict")


def _schedule_code(background: BackgroundTasks, deps: DepsDep, req: CodeRequest) -> None:
    background.add_task(service.send_code_if_known, request=req, messages=deps.messages,
                        tenants=deps.tenants, codes=deps.codes, mailer=deps.mailer,
                        settings=deps.settings, now=deps.clock(), accounts=deps.accounts)


@api.post("/auth/code", status_code=202, response_model=CodeAccepted, tags=["auth"],
          summary="Email a one-time sign-in code",
          description="Always answers 202 with the same body, whether or not the address has "
                      "messages; the code is emailed only if the tenant has a live message "
                      "for it. Rate-limited per address and per client IP.",
          responses=_errors(400, 422, 429, 503))
async def request_code(body: CodeRequestIn, background: BackgroundTasks, deps: DepsDep,
                       ip: ClientIpDep) -> CodeAccepted:
    req = await service.request_code(tenant_id=body.tenant_id, email=body.email, client_ip=ip,
                                     limiter=deps.limiter, settings=deps.settings,
                                     now=deps.clock(), purpose=body.purpose)
    _schedule_code(background, deps, req)
    return CodeAccepted()


@api.post("/auth/session", response_model=SessionOut, tags=["auth"],
          summary="Exchange a code for a session",
          description="Wrong, expired, reused or dead codes all get the same 401 (so does a "
                      "code alone under the tenant policy `password+code`; use "
                      "/v1/auth/signin). With an authenticator enrolled: 202 and a ticket "
                      "for /v1/auth/totp. Sets a Secure, HttpOnly, SameSite=Strict cookie "
                      "with the same token.",
          responses=_errors(400, 401, 422, 429, 503))
async def create_session(body: SessionIn, response: Response, deps: DepsDep,
                         ip: ClientIpDep, ua: UserAgentDep) -> Response | SessionOut:
    result = await accounts.sign_in(account_ports(deps), tenant_id=body.tenant_id,
                                    email=body.email, code=body.code, password=None,
                                    totp_code=None, client=accounts.Client(ip, ua),
                                    now=deps.clock())
    if result.session is None:
        return JSONResponse({"status": "totp_required", "mfa_ticket": result.mfa_ticket},
                            status_code=202)
    _set_cookie(response, deps, result.session)
    return SessionOut(token=result.session.token, expires_at=result.session.expires_at)


@api.post("/auth/logout", status_code=204, tags=["auth"], summary="End the session",
          response_class=Response)
async def logout(deps: DepsDep, token: TokenDep) -> Response:
    await service.logout(token=token, sessions=deps.sessions)
    response = Response(status_code=204)
    response.delete_cookie(deps.settings.cookie_name, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


@api.get("/messages", response_model=MessageList, tags=["messages"],
         summary="List my messages", description="Newest first, live messages only.",
         responses={200: {"description": "a page of my messages", "links": {
             name: {"operationId": op,
                    "parameters": {"message_id": "$response.body#/messages/0/id"}}
             for name, op in (("ReadFirst", "read_message_v1_messages__message_id__get"),
                              ("OriginalOfFirst",
                               "original_v1_toolbar_messages__message_id__original_get"),
                              ("AckFirst", "ack_v1_toolbar_messages__message_id__ack_post"))}},
                    **_errors(400, 401, 503)})
async def list_messages(session: SessionDep, deps: DepsDep,
                        limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
                        cursor: Annotated[str | None, Query(max_length=200)] = None
                        ) -> MessageList:
    size = min(limit or deps.settings.page_size_default, deps.settings.page_size_max)
    page, nxt = await service.list_messages(session=session, messages=deps.messages,
                                            limit=size, cursor=cursor, now=deps.clock())
    return MessageList(messages=[MessageSummary(**_summary(r)) for r in page], next_cursor=nxt)


MessageId = Annotated[str, Path(max_length=64, description="32 hex characters",
                                examples=[EXAMPLE_ID])]


@api.get("/messages/{message_id}", response_model=MessageOut, tags=["messages"],
         summary="Read a message", description="Every read is audited (message.opened); if "
         "the audit event cannot be recorded the read is refused with 503.",
         responses={200: {"description": "the message", "links": {"DownloadFirstAttachment": {
             "operationId": "download_v1_messages__message_id__attachments__object_id__get",
             "parameters": {"message_id": "$request.path.message_id",
                            "object_id": "$response.body#/attachments/0/object_id"}}}},
                    **_errors(401, 404, 503)})
async def read_message(message_id: MessageId, session: SessionDep, deps: DepsDep,
                       ip: ClientIpDep, ua: UserAgentDep) -> MessageOut:
    _correlate(message_id, session.tenant_id)
    view = await service.read_message(session=session, message_id=message_id,
                                      messages=deps.messages, blobs=deps.blobs,
                                      keyring=deps.keyring, audit=deps.audit, client_ip=ip,
                                      user_agent=ua, now=deps.clock(),
                                      max_body_bytes=deps.settings.max_body_bytes)
    r = view.record
    log.info("message opened", extra={"event": "message.opened"})
    return MessageOut(
        **_summary(r), tenant_id=r.tenant_id, disclaimer=r.disclaimer, text=view.text,
        html=view.html,
        recipients=[RecipientOut(address=x.address, kind=x.kind)
                    for x in service.visible_recipients(r, session.address)],
        attachments=[AttachmentOut(object_id=o.object_id, filename=o.filename,
                                   content_type=o.content_type, size=o.size)
                     for o in r.objects if o.role == "attachment"])


async def _primed(first: bytes, rest: Any) -> Any:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


@api.get("/messages/{message_id}/attachments/{object_id}", tags=["messages"],
         summary="Download an attachment",
         description="Decrypted on the fly in constant memory. One `Range: bytes=` range "
                     "(`a-b`, `a-`, `-n`) gives 206; several ranges give the whole object. "
                     "Audited (attachment.downloaded) before any byte is sent. A failed "
                     "integrity check mid-stream aborts the connection.",
         response_class=StreamingResponse,
         responses={200: {"description": "The whole attachment, as the content type it was "
                                         "sent with (application/octet-stream if that is not "
                                         "a well-formed media type)",
                          "content": {"*/*": {"schema": {"type": "string",
                                                         "format": "binary"}}}},
                    206: {"description": "Partial content (one range)",
                          "content": {"*/*": {"schema": {"type": "string",
                                                         "format": "binary"}}}},
                    **_errors(401, 404, 416, 503)})
async def download(message_id: MessageId, object_id: MessageId, session: SessionDep,
                   deps: DepsDep, ip: ClientIpDep, ua: UserAgentDep,
                   range_header: Annotated[str | None, Header(alias="range")] = None,
                   if_range: Annotated[str | None, Header(alias="if-range")] = None
                   ) -> StreamingResponse:
    _correlate(message_id, session.tenant_id)
    d = await service.plan_download(session=session, message_id=message_id,
                                    object_id=object_id, range_header=range_header,
                                    if_range=if_range, messages=deps.messages,
                                    audit=deps.audit, client_ip=ip, user_agent=ua,
                                    now=deps.clock())
    body = service.stream_download(download=d, blobs=deps.blobs, keyring=deps.keyring)
    # Decrypt the first segment before committing to a status line, so an object that is
    # broken from the start gets a clean error response instead of an aborted 200.
    first = await anext(body, b"")
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(max(d.length, 0)),
        "Content-Disposition": content_disposition(d.obj.filename),
        "Cache-Control": "no-store",
        "ETag": d.etag,
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    log.info("attachment download", extra={"event": "attachment.downloaded",
                                            "status": 206 if d.partial else 200})
    if d.partial:
        headers["Content-Range"] = f"bytes {d.start}-{d.end}/{d.obj.size}"
    return StreamingResponse(_primed(first, body), status_code=206 if d.partial else 200,
                             headers=headers, media_type=safe_content_type(d.obj.content_type))
