"""Sign-in with an emailed code: request the code, exchange it for a session, log out."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from secmsg.retrieve import accounts, service
from secmsg.retrieve.deps import ClientIpDep, DepsDep, TokenDep, UserAgentDep, account_ports
from secmsg.retrieve.routes.common import CodeIn, SessionOut, errors, set_cookie
from secmsg.retrieve.service import CodeRequest

router = APIRouter(prefix="/v1")


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


def _schedule_code(background: BackgroundTasks, deps: DepsDep, req: CodeRequest) -> None:
    background.add_task(service.send_code_if_known, request=req, messages=deps.messages,
                        tenants=deps.tenants, codes=deps.codes, mailer=deps.mailer,
                        settings=deps.settings, now=deps.clock(), accounts=deps.accounts)


@router.post("/auth/code", status_code=202, response_model=CodeAccepted, tags=["auth"],
          summary="Email a one-time sign-in code",
          description="Always answers 202 with the same body, whether or not the address has "
                      "messages; the code is emailed only if the tenant has a live message "
                      "for it. Rate-limited per address and per client IP.",
          responses=errors(400, 422, 429, 503))
async def request_code(body: CodeRequestIn, background: BackgroundTasks, deps: DepsDep,
                       ip: ClientIpDep) -> CodeAccepted:
    req = await service.request_code(tenant_id=body.tenant_id, email=body.email, client_ip=ip,
                                     limiter=deps.limiter, settings=deps.settings,
                                     now=deps.clock(), purpose=body.purpose)
    _schedule_code(background, deps, req)
    return CodeAccepted()


@router.post("/auth/session", response_model=SessionOut, tags=["auth"],
          summary="Exchange a code for a session",
          description="Wrong, expired, reused or dead codes all get the same 401 (so does a "
                      "code alone under the tenant policy `password+code`; use "
                      "/v1/auth/signin). With an authenticator enrolled: 202 and a ticket "
                      "for /v1/auth/totp. Sets a Secure, HttpOnly, SameSite=Strict cookie "
                      "with the same token.",
          responses=errors(400, 401, 422, 429, 503))
async def create_session(body: SessionIn, response: Response, deps: DepsDep,
                         ip: ClientIpDep, ua: UserAgentDep) -> Response | SessionOut:
    result = await accounts.sign_in(account_ports(deps), tenant_id=body.tenant_id,
                                    email=body.email, code=body.code, password=None,
                                    totp_code=None, client=accounts.Client(ip, ua),
                                    now=deps.clock())
    if result.session is None:
        return JSONResponse({"status": "totp_required", "mfa_ticket": result.mfa_ticket},
                            status_code=202)
    set_cookie(response, deps, result.session)
    return SessionOut(token=result.session.token, expires_at=result.session.expires_at)


@router.post("/auth/logout", status_code=204, tags=["auth"], summary="End the session",
          response_class=Response)
async def logout(deps: DepsDep, token: TokenDep) -> Response:
    await service.logout(token=token, sessions=deps.sessions)
    response = Response(status_code=204)
    response.delete_cookie(deps.settings.cookie_name, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response
