"""A signed-in recipient's messages: list, read, download an attachment."""


from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from secmsg.retrieve import downloads, service
from secmsg.retrieve.deps import (
    ClientIpDep,
    DepsDep,
    SessionDep,
    UserAgentDep,
)
from secmsg.retrieve.headers import content_disposition, safe_content_type
from secmsg.retrieve.ports import MessageRecord
from secmsg.retrieve.routes.common import EXAMPLE_ID, correlate, errors, primed

log = logging.getLogger(__name__)


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
    next_cursor: str | None = Field(description="Pass as ?after= for the next page (null: "
                                    "this was the last page)")


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


def _summary(r: MessageRecord) -> dict[str, Any]:
    return {"id": r.message_id, "sender": r.sender, "subject": r.subject,
            "received_at": r.received_at, "expires_at": r.expires_at,
            "attachment_count": r.attachment_count, "total_size": r.total_size}


router = APIRouter(prefix="/v1")


@router.get("/messages", response_model=MessageList, tags=["messages"],
         summary="List my messages", description="Newest first, live messages only, "
         "paged by `after=` (the `next_cursor` of the page before).",
         responses={200: {"description": "a page of my messages", "links": {
             name: {"operationId": op,
                    "parameters": {"message_id": "$response.body#/messages/0/id"}}
             for name, op in (("ReadFirst", "read_message_v1_messages__message_id__get"),
                              ("OriginalOfFirst",
                               "original_v1_toolbar_messages__message_id__original_get"),
                              ("AckFirst", "ack_v1_toolbar_messages__message_id__ack_post"))}},
                    **errors(400, 401, 503)})
async def list_messages(session: SessionDep, deps: DepsDep,
                        limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
                        after: Annotated[str | None, Query(
                            max_length=200, description="`next_cursor` of the previous page: "
                            "the page starts below it (newest first). Each page is one range "
                            "of the recipient's listing index, so a page costs the same "
                            "however many messages the box holds.")] = None,
                        cursor: Annotated[str | None, Query(
                            max_length=200, deprecated=True,
                            description="The earlier name of `after` (still accepted, "
                                        "cursors of either form)")] = None
                        ) -> MessageList:
    size = min(limit or deps.settings.page_size_default, deps.settings.page_size_max)
    page, nxt = await service.list_messages(session=session, messages=deps.messages,
                                            limit=size, cursor=after or cursor,
                                            now=deps.clock())
    return MessageList(messages=[MessageSummary(**_summary(r)) for r in page], next_cursor=nxt)


MessageId = Annotated[str, Path(max_length=64, description="32 hex characters",
                                examples=[EXAMPLE_ID])]


@router.get("/messages/{message_id}", response_model=MessageOut, tags=["messages"],
         summary="Read a message", description="Every read is audited (message.opened); if "
         "the audit event cannot be recorded the read is refused with 503.",
         responses={200: {"description": "the message", "links": {"DownloadFirstAttachment": {
             "operationId": "download_v1_messages__message_id__attachments__object_id__get",
             "parameters": {"message_id": "$request.path.message_id",
                            "object_id": "$response.body#/attachments/0/object_id"}}}},
                    **errors(401, 404, 503)})
async def read_message(message_id: MessageId, session: SessionDep, deps: DepsDep,
                       ip: ClientIpDep, ua: UserAgentDep) -> MessageOut:
    correlate(message_id, session.tenant_id)
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


@router.get("/messages/{message_id}/attachments/{object_id}", tags=["messages"],
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
                    **errors(401, 404, 416, 503)})
async def download(message_id: MessageId, object_id: MessageId, session: SessionDep,
                   deps: DepsDep, ip: ClientIpDep, ua: UserAgentDep,
                   range_header: Annotated[str | None, Header(alias="range")] = None,
                   if_range: Annotated[str | None, Header(alias="if-range")] = None
                   ) -> StreamingResponse:
    correlate(message_id, session.tenant_id)
    d = await downloads.plan_download(session=session, message_id=message_id,
                                    object_id=object_id, range_header=range_header,
                                    if_range=if_range, messages=deps.messages,
                                    audit=deps.audit, client_ip=ip, user_agent=ua,
                                    now=deps.clock())
    body = downloads.stream_download(download=d, blobs=deps.blobs, keyring=deps.keyring)
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
    return StreamingResponse(primed(first, body), status_code=206 if d.partial else 200,
                             headers=headers, media_type=safe_content_type(d.obj.content_type))
