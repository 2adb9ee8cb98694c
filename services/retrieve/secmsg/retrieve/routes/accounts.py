"""HTTP surface of accounts: register, sign in (per tenant policy), TOTP, password reset,
sign out everywhere. Thin: decode, call ``accounts``, shape the response."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from secmsg.retrieve import accounts, passwords
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import (
    BrowserSessionDep,
    ClientIpDep,
    Deps,
    DepsDep,
    UserAgentDep,
    account_ports,
)
from secmsg.retrieve.routes.common import CodeIn, SessionOut, errors, set_cookie
from secmsg.retrieve.service import NewSession

router = APIRouter(prefix="/v1", tags=["accounts"])


def client(ip: str, ua: str | None) -> Client:
    return Client(ip=ip, user_agent=ua)


Password = Field(min_length=1, max_length=passwords.MAX_LENGTH,
                 description=f"{passwords.MIN_LENGTH} to {passwords.MAX_LENGTH} characters; "
                             "common or breached passwords are refused (longer: 422)")


class RegisterIn(CodeIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "tenant_id": "abc-medical", "email": "pat@example.org", "code": "04817263",
        "password": "plum tractor seventeen lanterns"}]})
    code: str = Field(min_length=1, max_length=32, description="The 8-digit emailed code")
    password: str = Password


class SignInIn(CodeIn):
    code: str | None = Field(default=None, max_length=32,
                             description="Emailed code (policy code, password+code, or the "
                                         "fallback under policy password)")
    password: str | None = Field(default=None, max_length=passwords.MAX_LENGTH,
                                 description=f"At most {passwords.MAX_LENGTH} characters "
                                             "(no password may be longer)")
    totp: str | None = Field(default=None, max_length=16,
                             description="Authenticator code, if enrolled (or send it to "
                                         "/v1/auth/totp with the ticket)")


class MfaRequired(BaseModel):
    status: Literal["totp_required"] = "totp_required"
    mfa_ticket: str = Field(description="Send with the authenticator code to /v1/auth/totp")


class TotpIn(BaseModel):
    mfa_ticket: str = Field(min_length=1, max_length=512)
    totp: str = Field(min_length=1, max_length=16)


class ResetIn(RegisterIn):
    totp: str | None = Field(default=None, max_length=16,
                             description="Required when an authenticator is enrolled")


class TotpStartOut(BaseModel):
    secret: str = Field(description="Base32 secret (shown once; also in the URI)")
    otpauth_uri: str


class TotpConfirmIn(BaseModel):
    code: str = Field(min_length=1, max_length=16)


def _session_response(response: Response, deps: Deps, new: NewSession
                      ) -> SessionOut:
    set_cookie(response, deps, new)
    return SessionOut(token=new.token, expires_at=new.expires_at)


@router.post("/auth/register", response_model=SessionOut,
             summary="Register: emailed code + new password, signed in at once",
             description="Ask for a code first (`POST /v1/auth/code`, purpose `register`). "
                         "The password is checked before the code is used, so a refused "
                         "password (400 `weak_password`) does not burn the code.",
             responses=errors(400, 401, 422, 429, 503))
async def register(body: RegisterIn, response: Response, deps: DepsDep, ip: ClientIpDep,
                   ua: UserAgentDep) -> SessionOut:
    new = await accounts.register(account_ports(deps), tenant_id=body.tenant_id, email=body.email,
                                  code=body.code, password=body.password,
                                  client=client(ip, ua), now=deps.clock())
    return _session_response(response, deps, new)


@router.post("/auth/signin", response_model=SessionOut,
             summary="Sign in as the tenant's policy says",
             description="Policy `code`: the emailed code; `password`: the password, or the "
                         "code as the fallback; `password+code`: both. With an authenticator "
                         "enrolled, answers 202 with a ticket unless `totp` is given. Every "
                         "failure is the same 401.",
             responses={202: {"model": MfaRequired}, **errors(400, 401, 422, 429, 503)})
async def sign_in(body: SignInIn, response: Response, deps: DepsDep, ip: ClientIpDep,
                  ua: UserAgentDep) -> Response | SessionOut:
    result = await accounts.sign_in(account_ports(deps), tenant_id=body.tenant_id, email=body.email,
                                    code=body.code, password=body.password,
                                    totp_code=body.totp, client=client(ip, ua),
                                    now=deps.clock())
    if result.session is None:
        assert result.mfa_ticket is not None
        return JSONResponse(MfaRequired(mfa_ticket=result.mfa_ticket).model_dump(),
                            status_code=202)
    return _session_response(response, deps, result.session)


@router.post("/auth/totp", response_model=SessionOut,
             summary="Finish a sign-in with the authenticator code",
             responses=errors(401, 422, 429, 503))
async def finish_totp(body: TotpIn, response: Response, deps: DepsDep, ip: ClientIpDep,
                      ua: UserAgentDep) -> SessionOut:
    new = await accounts.complete_totp(account_ports(deps), ticket=body.mfa_ticket, code=body.totp,
                                       client=client(ip, ua), now=deps.clock())
    return _session_response(response, deps, new)


@router.post("/auth/password/reset", response_model=SessionOut,
             summary="Set a new password with an emailed code",
             description="Ask for a code first (purpose `reset`). Ends every other session "
                         "and token of the account.",
             responses=errors(400, 401, 422, 429, 503))
async def reset_password(body: ResetIn, response: Response, deps: DepsDep, ip: ClientIpDep,
                         ua: UserAgentDep) -> SessionOut:
    new = await accounts.reset_password(account_ports(deps), tenant_id=body.tenant_id,
                                        email=body.email, code=body.code,
                                        password=body.password, totp_code=body.totp,
                                        client=client(ip, ua), now=deps.clock())
    return _session_response(response, deps, new)


@router.post("/auth/logout-everywhere", status_code=204, response_class=Response,
             summary="Sign out on every device", description="Ends every session and "
             "revokes every token of the signed-in person.", responses=errors(401, 503))
async def logout_everywhere(request: Request, session: BrowserSessionDep, deps: DepsDep,
                            ip: ClientIpDep, ua: UserAgentDep) -> Response:
    await accounts.logout_everywhere(account_ports(deps), session=session, client=client(ip, ua),
                                     now=deps.clock())
    response = Response(status_code=204)
    response.delete_cookie(deps.settings.cookie_name, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


@router.post("/account/totp", response_model=TotpStartOut,
             summary="Start enrolling an authenticator app",
             description="Confirm with the app's first code at /v1/account/totp/confirm; "
                         "until then sign-in does not ask for it.",
             responses=errors(401, 503))
async def start_totp(session: BrowserSessionDep, deps: DepsDep) -> TotpStartOut:
    enrol = await accounts.start_totp(account_ports(deps), session=session, now=deps.clock())
    return TotpStartOut(secret=enrol.secret, otpauth_uri=enrol.uri)


@router.post("/account/totp/confirm", status_code=204, response_class=Response,
             summary="Confirm the authenticator with its first code",
             responses=errors(400, 401, 429, 503))
async def confirm_totp(body: TotpConfirmIn, session: BrowserSessionDep, deps: DepsDep,
                       ip: ClientIpDep, ua: UserAgentDep) -> Response:
    await accounts.confirm_totp(account_ports(deps), session=session, code=body.code,
                                client=client(ip, ua), now=deps.clock())
    return Response(status_code=204)


class AccountOut(BaseModel):
    tenant_id: str
    email: str
    has_password: bool
    totp_enabled: bool
    registered_at: datetime | None
    via: Literal["session", "token"]


@router.get("/account", response_model=AccountOut, summary="Who am I",
            responses=errors(401, 503))
async def whoami(session: BrowserSessionDep, deps: DepsDep) -> AccountOut:
    account = await deps.accounts.get(tenant_id=session.tenant_id, email=session.address)
    return AccountOut(tenant_id=session.tenant_id, email=session.address,
                      has_password=bool(account and account.password_hash),
                      totp_enabled=bool(account and account.totp_secret_sealed),
                      registered_at=account.registered_at if account else None,
                      via=session.via)
