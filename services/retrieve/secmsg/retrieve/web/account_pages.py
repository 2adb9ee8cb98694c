"""Account pages of the Secure Message Center: create an account or reset the password with an
emailed code, the authenticator app, connected apps (toolbar tokens) and toolbar approval
(the device flow's ``verification_uri``).

Thin like the other pages: every decision is ``accounts``, ``tokens`` or ``device``; these
handlers only check CSRF, call them and explain the answer.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import accounts, device, tokens
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, DepsDep, UserAgentDep, account_ports
from secmsg.retrieve.passwords import WeakPassword
from secmsg.retrieve.ports import SessionRecord
from secmsg.retrieve.web.context import WebDep
from secmsg.retrieve.web.routes import (
    Ctx,
    TenantPath,
    _safe_next,
    _session_cookie,
    _signed_in,
    password_form,
)
from secmsg.shared.errors import Conflict, NotFound, SecmsgError, Unauthorized

router = APIRouter(include_in_schema=False)
CsrfField = Annotated[str, Form(alias="csrf", max_length=128)]
NextField = Annotated[str, Form(max_length=300)]
EmailField = Annotated[str, Form(max_length=320)]
CodeField = Annotated[str, Form(max_length=32)]
PasswordField = Annotated[str, Form(max_length=1024)]
ALREADY_REGISTERED = ("this address already has a password: sign in with it, or choose "
                      "“Forgot your password?” on the sign-in page")


def _field_of(exc: SecmsgError) -> str:
    """Which field an account error belongs next to."""
    if isinstance(exc, WeakPassword):
        return "password"
    if isinstance(exc, Unauthorized):
        return "code"
    return "form"


async def _signed_in_form(ctx: Ctx, csrf_token: str) -> SessionRecord | Response:
    """The session behind a signed-in form; else the page to answer with (signed out, CSRF)."""
    session = await _signed_in(ctx)
    if isinstance(session, Response) or ctx.csrf_ok(csrf_token):
        return session
    return await ctx.csrf_refused()


# --- create an account / reset the password (one step: emailed code + password) -------------

@router.post("/web/{tenant_id}/register", response_class=HTMLResponse)
async def register_submit(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                          ip: ClientIpDep, ua: UserAgentDep, email: EmailField,
                          code: CodeField = "", password: PasswordField = "",
                          csrf_token: CsrfField = "", next: NextField = "") -> Response:
    ctx = Ctx(request, deps, web)
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    nxt = _safe_next(next)
    try:
        new = await accounts.register(account_ports(deps), tenant_id=tenant_id, email=email,
                                      code=code.strip(), password=password,
                                      client=Client(ip, ua), now=deps.clock())
    except SecmsgError as exc:
        detail = ALREADY_REGISTERED if isinstance(exc, Conflict) else exc.detail
        # A refused password leaves the code unused: keep it in the form.
        return await password_form(ctx, tenant_id, email=email, next_path=nxt, reset=False,
                                   status=exc.status, error=detail, error_field=_field_of(exc),
                                   code=code.strip() if isinstance(exc, WeakPassword) else "")
    response = RedirectResponse(nxt, status_code=303)
    _session_cookie(response, deps, new, tenant_id)
    return response


@router.post("/web/{tenant_id}/reset", response_class=HTMLResponse)
async def reset_submit(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                       ip: ClientIpDep, ua: UserAgentDep, email: EmailField,
                       code: CodeField = "", password: PasswordField = "",
                       totp: Annotated[str, Form(max_length=16)] = "",
                       csrf_token: CsrfField = "", next: NextField = "") -> Response:
    ctx = Ctx(request, deps, web)
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    nxt = _safe_next(next)
    try:
        new = await accounts.reset_password(account_ports(deps), tenant_id=tenant_id,
                                            email=email, code=code.strip(), password=password,
                                            totp_code=totp.strip() or None,
                                            client=Client(ip, ua), now=deps.clock())
    except SecmsgError as exc:
        return await password_form(ctx, tenant_id, email=email, next_path=nxt, reset=True,
                                   status=exc.status, error=exc.detail,
                                   error_field=_field_of(exc),
                                   code=code.strip() if isinstance(exc, WeakPassword) else "")
    response = RedirectResponse(nxt, status_code=303)
    _session_cookie(response, deps, new, tenant_id)
    return response


# --- my account ------------------------------------------------------------------------------

@router.get("/web/account", response_class=HTMLResponse)
async def account_page(request: Request, deps: DepsDep, web: WebDep) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    account = await deps.accounts.get(tenant_id=session.tenant_id, email=session.address)
    policy = await accounts.load_policy(account_ports(deps), session.tenant_id)
    return await ctx.page("account.html", title="Your account", policy=policy,
                          has_password=bool(account and account.password_hash),
                          totp_enabled=bool(account and account.totp_secret_sealed))


@router.post("/web/account/authenticator", response_class=HTMLResponse)
async def authenticator_start(request: Request, deps: DepsDep, web: WebDep,
                              csrf_token: CsrfField = "") -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in_form(ctx, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        enrol = await accounts.start_totp(account_ports(deps), session=session,
                                          now=deps.clock())
    except SecmsgError as exc:
        return await ctx.page("problem.html", status=exc.status,
                              title="Authenticator apps are not available", text=exc.detail)
    return await ctx.page("authenticator.html", secret=enrol.secret, uri=enrol.uri)


@router.post("/web/account/authenticator/confirm", response_class=HTMLResponse)
async def authenticator_confirm(request: Request, deps: DepsDep, web: WebDep, ip: ClientIpDep,
                                ua: UserAgentDep, code: CodeField = "",
                                secret: Annotated[str, Form(max_length=128)] = "",
                                uri: Annotated[str, Form(max_length=1024)] = "",
                                csrf_token: CsrfField = "") -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in_form(ctx, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        await accounts.confirm_totp(account_ports(deps), session=session, code=code.strip(),
                                    client=Client(ip, ua), now=deps.clock())
    except SecmsgError as exc:
        # The secret and URI come back from the form only to be shown again; confirmation
        # checks the pending secret kept (sealed) on the account.
        return await ctx.page("authenticator.html", status=exc.status, error=exc.detail,
                              secret=secret, uri=uri)
    return await ctx.page("problem.html", title="Authenticator app set up",
                          text="From now on, signing in also asks for a code from your "
                               "authenticator app.")


# --- connected apps (toolbar tokens) ---------------------------------------------------------

@router.get("/web/account/apps", response_class=HTMLResponse)
async def apps_page(request: Request, deps: DepsDep, web: WebDep) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    return await _apps(ctx)


async def _apps(ctx: Ctx, *, status: int = 200, notice: str | None = None,
                error: str | None = None) -> HTMLResponse:
    assert ctx.session is not None
    listed = await tokens.list_tokens(tokens=ctx.deps.tokens, accounts=ctx.deps.accounts,
                                      session=ctx.session, now=ctx.deps.clock())
    # The webmail's own 5-minute send tokens are not apps the person connected.
    apps = sorted(((t, alive) for t, alive in listed if t.client != "webmail"),
                  key=lambda pair: (not pair[1], -pair[0].created_at.timestamp()))
    return await ctx.page("apps.html", title="Connected apps", apps=apps, status=status,
                          notice=notice, error=error)


@router.post("/web/account/apps/revoke", response_class=HTMLResponse)
async def apps_revoke(request: Request, deps: DepsDep, web: WebDep, ip: ClientIpDep,
                      ua: UserAgentDep, token_id: Annotated[str, Form(max_length=64)] = "",
                      csrf_token: CsrfField = "") -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in_form(ctx, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        await tokens.revoke_token(tokens=deps.tokens, audit=deps.audit, session=session,
                                  token_id=token_id, now=deps.clock(), client_ip=ip,
                                  user_agent=ua)
    except NotFound:
        return await _apps(ctx, status=404, error="That app is not connected to your account.")
    return await _apps(ctx, notice="Access removed: that app can no longer read or send.")


# --- toolbar approval (device flow verification_uri) -----------------------------------------

DEVICE_LOOKUPS = 20  # signed-out code look-ups per client address per window
DEVICE_LOOKUP_WINDOW_S = 900

@router.get("/device")
async def device_uri(user_code: Annotated[str, Query(max_length=32)] = "") -> Response:
    """``verification_uri`` of the device flow: the page lives with the webmail."""
    query = f"?user_code={quote(user_code)}" if user_code else ""
    return RedirectResponse(f"/web/device{query}", status_code=303)


@router.get("/web/device", response_class=HTMLResponse)
async def device_page(request: Request, deps: DepsDep, web: WebDep, ip: ClientIpDep,
                      user_code: Annotated[str, Query(max_length=32)] = "") -> Response:
    ctx = Ctx(request, deps, web)
    session = await ctx.load_session()
    code = user_code.strip().upper()
    if session is None:
        if not code:
            return await ctx.page("device.html", user_code="")
        # Looked up before sign-in (it names the organisation only): limited per address so
        # nobody can sweep the code space for live requests.
        retry = await deps.limiter.hit(key=f"device-lookup:ip:{ip}", limit=DEVICE_LOOKUPS,
                                       window_s=DEVICE_LOOKUP_WINDOW_S, now=deps.clock())
        if retry is not None:
            return await ctx.page("device.html", status=429, user_code=code,
                                  error="too many codes tried; wait a few minutes")
        # The request says which organisation to sign in to; then back here.
        try:
            record = await deps.devices.by_user_code(device.normalize_user_code(code))
        except NotFound:
            record = None
        if record is None or record.status != "pending" or record.expires_at <= deps.clock():
            return await ctx.page("device.html", status=404, user_code=code,
                                  error="no pending request has this code")
        here = f"/web/device?user_code={quote(record.user_code)}"
        return RedirectResponse(f"/web/{record.tenant_id}/signin?next={quote(here, safe='/')}",
                                status_code=303)
    if not code:
        return await ctx.page("device.html", user_code="")
    try:
        record = await device.pending(devices=deps.devices, session=session, user_code=code,
                                      now=deps.clock())
    except NotFound as exc:
        return await ctx.page("device.html", status=404, user_code=code, error=exc.detail)
    return await ctx.page("device.html", user_code=record.user_code, request_=record)


@router.post("/web/device", response_class=HTMLResponse)
async def device_decide(request: Request, deps: DepsDep, web: WebDep,
                        user_code: Annotated[str, Form(max_length=32)] = "",
                        decision: Annotated[str, Form(max_length=16)] = "",
                        csrf_token: CsrfField = "") -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in_form(ctx, csrf_token)
    if isinstance(session, Response):
        return session
    if decision not in ("approve", "deny"):
        return await ctx.page("device.html", status=400, user_code=user_code,
                              error="choose Allow or Deny")
    try:
        record = await device.decide(devices=deps.devices, markers=deps.markers,
                                     accounts=deps.accounts, limiter=deps.limiter,
                                     settings=deps.settings, session=session,
                                     user_code=user_code, approve=decision == "approve",
                                     now=deps.clock())
    except SecmsgError as exc:
        return await ctx.page("device.html", status=exc.status, user_code=user_code,
                              error=exc.detail)
    return await ctx.page("device.html", decided=decision, request_=record, user_code="")
