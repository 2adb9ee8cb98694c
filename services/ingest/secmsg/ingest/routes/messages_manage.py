"""Routes for a sent message: expiry, revocation, recall and the delivery slip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from secmsg.ingest import messages_manage, slip
from secmsg.ingest.routes.common import SENDER_ERRORS, DepsDep, Sender, err, origin

router = APIRouter(prefix="/v1/messages", tags=["messages"])

MessageId = Annotated[str, Path(description="32 hex characters",
                                examples=["3f2b9c1e8d7a4b6f9e0d1c2b3a495867"])]
_WHO = ("Allowed: a tenant admin; an API key with `send` for the messages it submitted; a "
        "user token with `send` for the messages sent from its address. ")


class ExpiryIn(BaseModel):
    expires_at: datetime | None = Field(
        description="new expiry (in the future, at most 3650 days away); null: never expires",
        examples=["2030-01-31T12:00:00Z"])


class ExpiryOut(BaseModel):
    message_id: str
    expires_at: datetime | None


class RevokeIn(BaseModel):
    recipients: list[str] | None = Field(
        default=None, max_length=1000,
        description="addresses whose access ends; omitted or null: every recipient",
        examples=[["bob@example.org"]])


class Revoked(BaseModel):
    message_id: str
    revoked: list[str] = Field(description="the recipients now revoked (lower-cased)")


class Recalled(BaseModel):
    message_id: str
    state: Literal["recalled"] = "recalled"
    first_time: bool = Field(description="false: it had been recalled before")


class SlipNotification(BaseModel):
    state: Literal["queued", "not_sent", "sent", "deferred", "failed", "bounced"] = Field(
        description="queued: notify has not tried yet; not_sent: the sender's own mail server "
                    "delivers the placeholder (RFC 5322 submissions); sent: accepted by the "
                    "recipient's mail server; deferred: a temporary failure, retried at "
                    "`next_attempt_at`; failed: given up; bounced: accepted, then a delivery "
                    "report came back")
    at: datetime = Field(description="when this state was reached (queued, not_sent: when the "
                                     "message was received)")
    attempts: int = Field(ge=0, description="delivery attempts so far")
    reason: str | SkipJsonSchema[None] = Field(
        default=None, description="deferred, failed, bounced, not_sent: a fixed category, "
                                  "e.g. timeout, permanent_rejection, undeliverable")
    next_attempt_at: datetime | SkipJsonSchema[None] = Field(
        default=None, description="deferred: when notify tries again")
    bounce_status: str | SkipJsonSchema[None] = Field(
        default=None, description="bounced: the report's DSN status, e.g. 5.1.1")


class SlipDownload(BaseModel):
    file_name: str = Field(description="as the sender attached it")
    object_id: str
    times: int = Field(ge=1, description="download requests (a resumed or ranged download "
                                         "counts each request)")
    first_at: datetime
    last_at: datetime


class SlipToolbar(BaseModel):
    fetched: int = Field(ge=0, description="times a toolbar fetched the whole message")
    last_fetched_at: datetime | SkipJsonSchema[None] = None
    acknowledged_at: datetime | SkipJsonSchema[None] = Field(
        default=None, description="when a toolbar confirmed the message replaced the "
                                  "notification in the mailbox (the last time)")


class SlipRecipient(BaseModel):
    address: str
    kind: Literal["to", "cc", "bcc"] | str
    status: slip.Status = Field(
        description="the furthest step reached: acknowledged_by_toolbar > fetched_by_toolbar > "
                    "downloaded > opened > the notification's own state (notified, deferred, "
                    "bounced, failed, queued, not_notified)")
    summary: str = Field(description="the same facts as one sentence for a person",
                         examples=["Notified 2030-01-01 10:00 UTC; opened once, first "
                                   "2030-01-01 10:05 UTC; downloaded scan.pdf."])
    notification: SlipNotification
    opened: int = Field(ge=0, description="times the recipient opened the message")
    first_opened_at: datetime | SkipJsonSchema[None] = None
    last_opened_at: datetime | SkipJsonSchema[None] = None
    downloads: list[SlipDownload] = Field(description="one entry per attachment downloaded")
    toolbar: SlipToolbar
    access: Literal["open", "revoked", "recalled"] | str


class Slip(BaseModel):
    message_id: str
    sender: str
    state: str
    received_at: datetime | SkipJsonSchema[None] = None
    expires_at: datetime | SkipJsonSchema[None] = Field(
        default=None, description="left out: the message never expires")
    recipients: list[SlipRecipient]


def _slip_recipient(x: slip.Line) -> SlipRecipient:
    n, r = x.notification, x.reader
    return SlipRecipient(
        address=x.address, kind=x.kind, status=x.status, summary=x.summary,
        notification=SlipNotification(state=n.state, at=n.at, attempts=n.attempts,
                                      reason=n.reason, next_attempt_at=n.next_attempt_at,
                                      bounce_status=n.bounce_status),
        opened=len(r.opened), first_opened_at=r.opened[0] if r.opened else None,
        last_opened_at=r.opened[-1] if r.opened else None,
        downloads=[SlipDownload(file_name=d.file_name, object_id=d.object_id, times=d.times,
                                first_at=d.first_at, last_at=d.last_at)
                   for d in r.downloads.values()],
        toolbar=SlipToolbar(fetched=len(r.fetched),
                            last_fetched_at=r.fetched[-1] if r.fetched else None,
                            acknowledged_at=r.acknowledged[-1] if r.acknowledged else None),
        access=x.access)


@router.patch("/{message_id}", response_model=ExpiryOut, status_code=202,
              responses={**SENDER_ERRORS,
                         400: err("expires_at in the past or too far away"),
                         409: err("the message was recalled, or has expired (even if not "
                                  "purged yet)")},
              summary="Change when a message expires",
              description=_WHO + "store applies the new expiry (`message.expiry_changed`); "
                                 "repeating the same change changes nothing.")
async def patch_message(message_id: MessageId, body: ExpiryIn, creds: Sender, deps: DepsDep,
                        request: Request) -> ExpiryOut:
    at = await messages_manage.change_expiry(
        creds=creds, message_id=message_id, expires_at=body.expires_at,
        messages=deps.messages, events=deps.events, origin=origin(request),
        now=datetime.now(UTC))
    return ExpiryOut(message_id=message_id, expires_at=at)


@router.post("/{message_id}/revoke", response_model=Revoked,
             responses={**SENDER_ERRORS,
                        400: err("an address that is not a recipient of the message"),
                        409: err("the message was recalled")},
             summary="End recipients' access (all if none given)",
             description=_WHO + "Access stops on the recipient's next request (retrieve "
                                "answers 410 `revoked`). Idempotent; undo per recipient with "
                                "`DELETE /v1/messages/{id}/revocations/{address}`.")
async def revoke_message(message_id: MessageId, creds: Sender, deps: DepsDep,
                         request: Request, body: RevokeIn | None = None) -> Revoked:
    revoked = await messages_manage.revoke(
        creds=creds, message_id=message_id,
        recipients=body.recipients if body is not None else None, messages=deps.messages,
        events=deps.events, origin=origin(request), now=datetime.now(UTC))
    return Revoked(message_id=message_id, revoked=revoked)


@router.delete("/{message_id}/revocations/{address}", status_code=204,
               responses={**SENDER_ERRORS, 409: err("the message was recalled")},
               summary="Give a revoked recipient access again",
               description=_WHO + "Nothing happens if the recipient was not revoked.")
async def restore_access(message_id: MessageId, address: str, creds: Sender, deps: DepsDep,
                         request: Request) -> None:
    await messages_manage.restore(creds=creds, message_id=message_id, address=address,
                                  messages=deps.messages, events=deps.events,
                                  origin=origin(request))


@router.post("/{message_id}/recall", response_model=Recalled, status_code=202,
             responses=SENDER_ERRORS, summary="Recall a message (access ends, content purged)",
             description=_WHO + "Every recipient's access ends at once (retrieve answers 410 "
                                "`recalled`); store then deletes the content "
                                "(`message.recalled`). Cannot be undone. Idempotent.")
async def recall_message(message_id: MessageId, creds: Sender, deps: DepsDep,
                         request: Request) -> Recalled:
    fresh = await messages_manage.recall(creds=creds, message_id=message_id,
                                         messages=deps.messages, events=deps.events,
                                         origin=origin(request), now=datetime.now(UTC))
    return Recalled(message_id=message_id, first_time=fresh)


# A fact that has not happened is left out of the slip's JSON, never ``null``.
@router.get("/{message_id}/slip", response_model=Slip, response_model_exclude_none=True,
            responses=SENDER_ERRORS,
            summary="Delivery slip: per recipient notified, deferred, bounced, opened, "
                    "downloaded, fetched and acknowledged by a toolbar",
            description=_WHO + "From the delivery states and the audit trail store records; "
                               "a message appears once store has recorded it. A fact that has "
                               "not happened is left out, never `null`.")
async def delivery_slip(message_id: MessageId, creds: Sender, deps: DepsDep) -> Slip:
    message, lines = await messages_manage.slip(creds=creds, message_id=message_id,
                                                messages=deps.messages)
    return Slip(
        message_id=message.message_id, sender=message.sender, state=message.state,
        received_at=message.received_at, expires_at=message.expires_at,
        recipients=[_slip_recipient(x) for x in lines])
