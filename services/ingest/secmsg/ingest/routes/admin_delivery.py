"""Admin routes for reports and delivery: audit export, delivery figures, deliverability,
undeliverable addresses, key rotation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from secmsg.ingest import reports
from secmsg.ingest.routes.common import AUTH_ERRORS, Admin, DepsDep, err, origin
from secmsg.shared.errors import InvalidInput
from secmsg.shared.ids import is_message_id

router = APIRouter(prefix="/v1/admin", tags=["admin: delivery and audit"])

Since = Annotated[datetime | None, Query(description="from this time (inclusive, ISO 8601)",
                                         examples=["2030-01-01T00:00:00Z"])]
Until = Annotated[datetime | None, Query(description="up to this time (exclusive)")]
_RANGE_ERRORS = {**AUTH_ERRORS, 400: err("since not before until, or a bad message id"),
                 422: err("a time that is not ISO 8601")}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("/audit", response_class=StreamingResponse, responses={
    200: {"content": {"application/x-ndjson": {"example": (
        '{"event_id":"...","at":"2030-01-01T10:00:00+00:00","tenant_id":"acme",'
        '"message_id":"3f2b...","kind":"message.opened","recipient":"bob@example.org",...}\n')}},
        "description": "JSON Lines, oldest first"}, **_RANGE_ERRORS},
    summary="Export the tenant's audit trail (JSON Lines, streamed)")
async def export_audit(creds: Admin, deps: DepsDep, since: Since = None, until: Until = None,
                       message_id: Annotated[str | None, Query()] = None) -> StreamingResponse:
    since, until = _utc(since), _utc(until)
    reports.check_range(since, until)
    if message_id is not None and not is_message_id(message_id):
        raise InvalidInput("message_id must be 32 hex characters")
    return StreamingResponse(
        reports.audit_lines(tenant_id=creds.tenant.tenant_id, since=since, until=until,
                            message_id=message_id, reports=deps.reports),
        media_type="application/x-ndjson")


class DeliveryStats(BaseModel):
    sent: int = Field(description="accepted by the receiving SMTP server, not bounced since")
    deferred: int = Field(description="waiting for a retry")
    bounced: int
    failed: int
    final: int = Field(description="sent + bounced + failed")
    delivery_rate: float | None = Field(description="sent / final; null when nothing is final")


@router.get("/delivery-stats", response_model=DeliveryStats, responses=_RANGE_ERRORS,
            summary="Notification delivery figures by state (time: last state change)")
async def delivery_stats(creds: Admin, deps: DepsDep, since: Since = None,
                         until: Until = None) -> DeliveryStats:
    since, until = _utc(since), _utc(until)
    reports.check_range(since, until)
    return DeliveryStats(**await reports.delivery_stats(
        tenant_id=creds.tenant.tenant_id, since=since, until=until, reports=deps.reports))


class Listing(BaseModel):
    target: str
    zone: str
    answer: str | None = None


class Deliverability(BaseModel):
    checked: bool = Field(description="false: the monitor has not checked yet")
    listed: bool | None = None
    listings: list[Listing] = []
    checked_at: datetime | None = None
    relay: str | None = Field(default=None, description="primary | standby")
    switched_at: datetime | None = None


@router.get("/deliverability", response_model=Deliverability, responses=AUTH_ERRORS,
            summary="The platform's block-list status and relay (the same for every tenant)")
async def deliverability(creds: Admin, deps: DepsDep) -> Deliverability:
    doc = await deps.reports.dnsbl()
    if doc is None:
        return Deliverability(checked=False)
    return Deliverability(
        checked=True, listed=doc.listed,
        listings=[Listing(target=x.target, zone=x.zone, answer=x.answer) for x in doc.listings],
        checked_at=doc.checked_at, relay=doc.relay, switched_at=doc.switched_at)


class Undeliverable(BaseModel):
    address: str
    status: str | None = Field(description="the bounce's DSN status, e.g. 5.1.1")
    message_id: str | None
    at: datetime | None


class UndeliverableList(BaseModel):
    addresses: list[Undeliverable]


@router.get("/undeliverable", response_model=UndeliverableList, responses=AUTH_ERRORS,
            summary="Addresses that hard-bounced (notifications to them are not sent)")
async def list_undeliverable(creds: Admin, deps: DepsDep) -> UndeliverableList:
    docs = await deps.reports.undeliverable(creds.tenant.tenant_id)
    return UndeliverableList(addresses=[Undeliverable(
        address=d.address, status=d.status or None, message_id=d.message_id or None, at=d.at)
        for d in docs])


@router.delete("/undeliverable/{address}", status_code=204,
               responses={**AUTH_ERRORS, 404: err("the address is not on the list")},
               summary="Clear an address (e.g. the mailbox was fixed): notify sends again",
               description="Store owns the list: the change reaches it as an event and is "
                           "applied within moments (the list may show the address until).")
async def clear_undeliverable(address: str, creds: Admin, deps: DepsDep,
                              request: Request) -> None:
    await reports.clear_undeliverable(creds=creds, address=address, reports=deps.reports,
                                      events=deps.events, origin=origin(request))


class RotationStarted(BaseModel):
    rotation_id: str
    generation: int


class Rotation(BaseModel):
    rotation_id: str
    generation: int
    state: str = Field(description="requested | running | done | failed")
    total: int | None
    done: int | None
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    requested_by: str | None


@router.post("/keys/rotate", response_model=RotationStarted, status_code=202,
             responses={**AUTH_ERRORS, 409: err("a rotation is still running")},
             summary="Rotate the tenant's key",
             description="New content is encrypted under the new key generation at once; "
                         "store then re-wraps every existing data key in the background "
                         "(see `GET /v1/admin/keys/rotations/{id}`). One rotation at a time.")
async def rotate_key(creds: Admin, deps: DepsDep, request: Request) -> RotationStarted:
    rotation_id, generation = await reports.rotate_key(
        creds=creds, reports=deps.reports, access=deps.access, events=deps.events,
        origin=origin(request), now=datetime.now(UTC))
    return RotationStarted(rotation_id=rotation_id, generation=generation)


@router.get("/keys/rotations/{rotation_id}", response_model=Rotation,
            responses={**AUTH_ERRORS, 404: err("no such rotation of this tenant")},
            summary="Progress of a key rotation")
async def get_rotation(rotation_id: str, creds: Admin, deps: DepsDep) -> Rotation:
    doc = await reports.rotation(tenant_id=creds.tenant.tenant_id, rotation_id=rotation_id,
                                 reports=deps.reports, access=deps.access)
    return Rotation(rotation_id=doc.id, generation=doc.generation, state=doc.state,
                    total=doc.total, done=doc.done, started_at=doc.started_at,
                    updated_at=doc.updated_at, finished_at=doc.finished_at,
                    requested_by=doc.requested_by)
