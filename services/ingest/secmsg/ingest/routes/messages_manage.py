"""Routes for a sent message: expiry, revocation, recall and the delivery slip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from secmsg.ingest import messages_manage
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


class Download(BaseModel):
    object_id: str | None
    at: datetime | None


class SlipRecipient(BaseModel):
    address: str
    kind: Literal["to", "cc", "bcc"] | str
    notification_state: str | None = Field(
        description="sent | deferred | failed | bounced; null: not attempted yet")
    notification_at: datetime | None
    notification_reason: str | None = Field(description="a fixed category, e.g. timeout")
    first_opened_at: datetime | None
    downloads: list[Download]
    access: Literal["open", "revoked", "recalled"] | str


class Slip(BaseModel):
    message_id: str
    sender: str
    state: str
    received_at: datetime | None
    expires_at: datetime | None
    recipients: list[SlipRecipient]


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


@router.get("/{message_id}/slip", response_model=Slip, responses=SENDER_ERRORS,
            summary="Delivery slip: per recipient notified, opened, downloaded",
            description=_WHO + "From the delivery states and the audit trail store records; "
                               "a message appears once store has recorded it.")
async def delivery_slip(message_id: MessageId, creds: Sender, deps: DepsDep) -> Slip:
    message, lines = await messages_manage.slip(creds=creds, message_id=message_id,
                                                messages=deps.messages)
    return Slip(
        message_id=message.message_id, sender=message.sender, state=message.state,
        received_at=message.received_at, expires_at=message.expires_at,
        recipients=[SlipRecipient(
            address=x.address, kind=x.kind, notification_state=x.notification_state,
            notification_at=x.notification_at, notification_reason=x.notification_reason,
            first_opened_at=x.first_opened_at,
            downloads=[Download(**d) for d in x.downloads], access=x.access) for x in lines])
