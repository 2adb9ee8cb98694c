"""The toolbar API: thin wrappers over ``toolbar`` (detect, fetch the whole message, ack)."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from secmsg.retrieve import service, toolbar
from secmsg.retrieve.deps import ClientIpDep, DepsDep, SessionDep, UserAgentDep
from secmsg.retrieve.routes.common import EXAMPLE_ID, correlate, errors, primed
from secmsg.shared.http_errors import ErrorBody
from secmsg.shared.templating import message_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/toolbar", tags=["toolbar"])
EXAMPLE_URL = f"https://secure.example/m/abc-medical/{EXAMPLE_ID}"
RAW_EXAMPLE = ("From: doctor@abc-medical.example\r\nTo: pat@example.org\r\n"
               "Subject: Lab results\r\nX-Secure-Message-Id: " + EXAMPLE_ID + "\r\n"
               "X-Secure-Message-Url: " + EXAMPLE_URL + "\r\n\r\n...\r\n")

# The loader every message route uses (revocation and recall checks included).
_load = service.get_mine


class DetectIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"message_id": EXAMPLE_ID}, {"url": EXAMPLE_URL}, {"raw": RAW_EXAMPLE}]})
    message_id: str | None = Field(default=None, max_length=64,
                                   description="The id from X-Secure-Message-Id")
    url: str | None = Field(default=None, max_length=2048,
                            description="The link in the notification")
    raw: str | None = Field(default=None, max_length=1 << 20,
                            description="The whole notification (RFC 5322 text, up to 1 MiB)")


class DetectOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"message_id": EXAMPLE_ID, "tenant_id": "abc-medical", "url": EXAMPLE_URL,
         "available": True}]})
    message_id: str
    tenant_id: str = Field(description="The tenant named in the link, else the caller's")
    url: str = Field(description="The message's link (SECMSG_RETRIEVE_PUBLIC_URL)")
    available: bool = Field(description="Whether the caller can fetch it now (false for "
                            "someone else's, expired, revoked or recalled messages alike)")


class AckOut(BaseModel):
    message_id: str = Field(examples=[EXAMPLE_ID])
    status: str = Field(default="acknowledged", examples=["acknowledged"])


MessageId = Annotated[str, Path(max_length=64, description="32 hex characters",
                                examples=[EXAMPLE_ID])]


@router.post("/detect", response_model=DetectOut, summary="Recognise a notification",
             description="Give exactly one of `message_id`, `url` or `raw` (the notification "
                         "or placeholder as text: the `X-Secure-Message-Id`/`-Url` headers, or "
                         "the body markers if a mail client stripped them). Answers 404 when "
                         "`raw` carries no markers. Reads no content and records nothing.",
             responses=errors(400, 401, 404, 422, 503))
async def detect(body: DetectIn, session: SessionDep,
                 deps: DepsDep) -> DetectOut:
    toolbar.require_read(session)
    found = toolbar.detect(message_id=body.message_id, url=body.url, raw=body.raw)
    ok = await toolbar.available(session=session, found=found, load=_load,
                                 messages=deps.messages, now=deps.clock())
    tenant = found.tenant_id or session.tenant_id
    return DetectOut(message_id=found.message_id, tenant_id=tenant, available=ok,
                     url=message_url(deps.public_url, tenant, found.message_id))


@router.get("/messages/{message_id}/original", summary="The whole message as RFC 5322",
            description="For a message submitted as RFC 5322 (Outlook/Exchange path): the "
                        "original, byte for byte, with `X-Secure-Message-Retrieved: <host>; "
                        "id=<message id>; <date>` added on top. For an API-submitted message: "
                        "one built from it (From, To/Cc -- never Bcc --, Subject, Date = "
                        "received, Message-ID `<message id@tenant.secmsg>`, text/html "
                        "alternatives, base64 attachments) with the same header. Streamed in "
                        "constant memory; audited (`message.fetched`) before any byte is sent.",
            response_class=StreamingResponse,
            responses={200: {"content": {"message/rfc822": {}}},
                       **errors(401, 404, 503),
                       410: {"model": ErrorBody, "description": "Revoked or recalled "
                             "(`error` is `revoked` or `recalled`)"}})
async def original(message_id: MessageId, session: SessionDep,
                   deps: DepsDep, ip: ClientIpDep, ua: UserAgentDep) -> StreamingResponse:
    correlate(message_id, session.tenant_id)
    now = deps.clock()
    record = await toolbar.plan_fetch(session=session, message_id=message_id, load=_load,
                                      messages=deps.messages, audit=deps.audit, client_ip=ip,
                                      user_agent=ua, now=now)
    body = toolbar.message_stream(record=record, session=session, messages=deps.messages,
                                  blobs=deps.blobs, keyring=deps.keyring,
                                  host=urlsplit(deps.public_url).hostname or "", now=now)
    # Decrypt the first segment before the status line: broken content gets a clean error.
    first = await anext(body, b"")
    log.info("message fetched", extra={"event": "message.fetched"})
    return StreamingResponse(primed(first, body), media_type="message/rfc822", headers={
        "Content-Disposition": f'attachment; filename="{record.message_id}.eml"',
        "Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'; sandbox"})


@router.post("/messages/{message_id}/ack", response_model=AckOut,
             summary="Acknowledge a replaced placeholder",
             description="The toolbar put the real message in the mailbox; recorded in the "
                         "audit trail as `message.acknowledged`. Repeating it records again.",
             responses=errors(401, 404, 503))
async def ack(message_id: MessageId, session: SessionDep, deps: DepsDep, ip: ClientIpDep,
              ua: UserAgentDep) -> AckOut:
    correlate(message_id, session.tenant_id)
    record = await toolbar.acknowledge(session=session, message_id=message_id, load=_load,
                                       messages=deps.messages, audit=deps.audit, client_ip=ip,
                                       user_agent=ua, now=deps.clock())
    log.info("message acknowledged", extra={"event": "message.acknowledged"})
    return AckOut(message_id=record.message_id)

