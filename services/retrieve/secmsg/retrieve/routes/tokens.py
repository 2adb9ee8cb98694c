"""HTTP surface of toolbar tokens: the device flow (RFC 8628 shape) and the person's own
token list. Thin: decode, call ``device``/``tokens``, shape the response."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from secmsg.retrieve import device, tokens
from secmsg.retrieve.deps import (
    BrowserSessionDep,
    ClientIpDep,
    DepsDep,
    SessionDep,
    UserAgentDep,
)
from secmsg.retrieve.routes.common import TENANT_PATTERN, errors
from secmsg.shared.errors import NotFound
from secmsg.shared.http_errors import ErrorBody

router = APIRouter(prefix="/v1")
Scope = Literal["read", "send", "admin"]


class AuthorizeIn(BaseModel):
    tenant_id: str = Field(pattern=TENANT_PATTERN)
    client_name: str = Field(min_length=1, max_length=100,
                             examples=["Outlook toolbar on PAT-LAPTOP"])
    scopes: list[Scope] = Field(min_length=1, max_length=3, examples=[["read", "send"]])


class AuthorizeOut(BaseModel):
    device_code: str = Field(description="Secret: poll /v1/device/token with it")
    user_code: str = Field(examples=["BCDF-GHJK"], description="The person types this in")
    verification_uri: str
    verification_uri_complete: str
    interval: int = Field(description="Seconds between polls")
    expires_in: int


class UserCodeIn(BaseModel):
    user_code: str = Field(min_length=1, max_length=16)


class DecisionOut(BaseModel):
    status: Literal["approved", "denied"]
    client_name: str
    scopes: list[str]


class TokenIn(BaseModel):
    device_code: str = Field(min_length=1, max_length=128)


class TokenOut(BaseModel):
    access_token: str = Field(description="`smt_<token_id>_<secret>`; shown once")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    token_id: str
    scopes: list[str]
    expires_at: datetime | None


class TokenInfo(BaseModel):
    token_id: str
    client: str
    label: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool


class TokenList(BaseModel):
    tokens: list[TokenInfo]


_FLOW_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "authorization_pending, slow_down, "
          "expired_token or access_denied (RFC 8628)"}}


@router.post("/device/authorize", response_model=AuthorizeOut, tags=["device"],
             summary="A toolbar asks for a token",
             description="Show `user_code` to the person and poll `/v1/device/token` every "
                         "`interval` seconds.", responses=errors(422, 429, 503))
async def authorize(body: AuthorizeIn, deps: DepsDep, ip: ClientIpDep) -> AuthorizeOut:
    a = await device.authorize(devices=deps.devices, limiter=deps.limiter,
                               settings=deps.settings, public_url=deps.public_url,
                               tenant_id=body.tenant_id, client_name=body.client_name,
                               scopes=body.scopes, client_ip=ip, now=deps.clock())
    return AuthorizeOut(device_code=a.device_code, user_code=a.user_code,
                        verification_uri=a.verification_uri,
                        verification_uri_complete=a.verification_uri_complete,
                        interval=a.interval, expires_in=a.expires_in)


async def _decide(body: UserCodeIn, session: BrowserSessionDep, deps: DepsDep,
                  approve: bool) -> DecisionOut:
    record = await device.decide(devices=deps.devices, markers=deps.markers,
                                 accounts=deps.accounts, limiter=deps.limiter,
                                 settings=deps.settings, session=session,
                                 user_code=body.user_code, approve=approve, now=deps.clock())
    return DecisionOut(status="approved" if approve else "denied",
                       client_name=record.client_name, scopes=list(record.scopes))


@router.post("/device/approve", response_model=DecisionOut, tags=["device"],
             summary="The signed-in person approves a toolbar",
             responses=errors(401, 404, 429, 503))
async def approve(body: UserCodeIn, session: BrowserSessionDep, deps: DepsDep) -> DecisionOut:
    return await _decide(body, session, deps, True)


@router.post("/device/deny", response_model=DecisionOut, tags=["device"],
             summary="The signed-in person refuses a toolbar",
             responses=errors(401, 404, 429, 503))
async def deny(body: UserCodeIn, session: BrowserSessionDep, deps: DepsDep) -> DecisionOut:
    return await _decide(body, session, deps, False)


@router.post("/device/token", response_model=TokenOut, tags=["device"],
             summary="The toolbar polls for its token (single use)",
             responses={**_FLOW_ERRORS, **errors(422, 503)})
async def token(body: TokenIn, deps: DepsDep, ip: ClientIpDep, ua: UserAgentDep) -> TokenOut:
    issued = await device.redeem(devices=deps.devices, markers=deps.markers,
                                 tokens=deps.tokens, accounts=deps.accounts, audit=deps.audit,
                                 settings=deps.settings, device_code=body.device_code,
                                 client_ip=ip, user_agent=ua, now=deps.clock())
    return TokenOut(access_token=issued.token, token_id=issued.token_id,
                    scopes=list(issued.scopes), expires_at=issued.expires_at)


@router.get("/tokens", response_model=TokenList, tags=["tokens"],
            summary="My tokens (no secrets)", responses=errors(401, 503))
async def list_tokens(session: BrowserSessionDep, deps: DepsDep) -> TokenList:
    rows = await tokens.list_tokens(tokens=deps.tokens, accounts=deps.accounts,
                                    session=session, now=deps.clock())
    return TokenList(tokens=[TokenInfo(
        token_id=t.token_id, client=t.client, label=t.label, scopes=list(t.scopes),
        created_at=t.created_at, expires_at=t.expires_at, last_used_at=t.last_used_at,
        revoked_at=t.revoked_at, active=alive) for t, alive in rows])


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response, tags=["tokens"],
               summary="Revoke one of my tokens",
               description="With a session, or with the token itself (a toolbar signing out).",
               responses=errors(401, 404, 503))
async def revoke(token_id: Annotated[str, Path(max_length=64)], session: SessionDep,
                 deps: DepsDep, ip: ClientIpDep, ua: UserAgentDep) -> Response:
    if session.via == "token" and session.token_id != token_id:
        raise NotFound("token not found")
    await tokens.revoke_token(tokens=deps.tokens, audit=deps.audit, session=session,
                              token_id=token_id, now=deps.clock(), client_ip=ip,
                              user_agent=ua)
    return Response(status_code=204)
