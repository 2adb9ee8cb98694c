"""My account: the account page (sessions with last use, sign out one or all others), the
password (change, or choose a first one), the authenticator app (QR code, recovery codes, off
with a fresh code) and connected apps (toolbar tokens).

Thin like the other pages: every decision is ``accounts``, ``selfservice`` or ``tokens``;
these handlers only call them and explain the answer (sign-in and CSRF are the
``SignedInDep``/``SignedInFormDep`` dependencies).
"""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import accounts, selfservice, tokens
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, UserAgentDep, account_ports
from secmsg.retrieve.passwords import WeakPassword
from secmsg.retrieve.ports import SessionRecord
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import Ctx, CtxDep, SignedInDep, SignedInFormDep
from secmsg.retrieve.web.signin import session_cookie
from secmsg.shared.errors import NotFound, SecmsgError, Unauthorized

router = page_router()
CodeField = Annotated[str, Form(max_length=32)]
PasswordField = Annotated[str, Form(max_length=1024)]


@router.get("/web/account", response_class=HTMLResponse)
async def account_page(ctx: CtxDep, session: SignedInDep,
                       changed: Annotated[str, Query(max_length=16)] = "") -> Response:
    return await _account(ctx, session, notice="Password saved. You are signed out "
                          "everywhere else." if changed == "password" else None)


async def _account(ctx: Ctx, session: SessionRecord, *, status: int = 200,
                   notice: str | None = None, error: str | None = None) -> HTMLResponse:
    deps = ctx.deps
    account = await deps.accounts.get(tenant_id=session.tenant_id, email=session.address)
    policy = await accounts.load_policy(account_ports(deps), session.tenant_id)
    sessions = await selfservice.list_sessions(account_ports(deps), session=session,
                                               now=deps.clock())
    return await ctx.page("account.html", title="Your account", policy=policy, status=status,
                          has_password=bool(account and account.password_hash),
                          totp_enabled=bool(account and account.totp_secret_sealed),
                          recovery_left=account.recovery_codes_left if account else 0,
                          sessions=sessions, notice=notice, error=error)


def _qr(uri: str) -> tuple[str, int]:
    """The provisioning URI as a QR code: an SVG data URI (CSP img-src allows data:)."""
    code = segno.make(uri, error="m")
    scale = 4
    return code.svg_data_uri(scale=scale, border=4), int(code.symbol_size(scale=scale, border=4)[0])


async def _enrol_page(ctx: Ctx, *, secret: str, uri: str, status: int = 200,
                      error: str | None = None) -> HTMLResponse:
    qr, size = _qr(uri)
    return await ctx.page("authenticator.html", status=status, secret=secret, uri=uri, qr=qr,
                          qr_size=size, error=error)


@router.post("/web/account/authenticator", response_class=HTMLResponse)
async def authenticator_start(ctx: CtxDep, session: SignedInFormDep) -> Response:
    try:
        enrol = await accounts.start_totp(account_ports(ctx.deps), session=session,
                                          now=ctx.deps.clock())
    except SecmsgError as exc:
        return await ctx.page("problem.html", status=exc.status,
                              title="Authenticator apps are not available", text=exc.detail)
    return await _enrol_page(ctx, secret=enrol.secret, uri=enrol.uri)


@router.post("/web/account/authenticator/confirm", response_class=HTMLResponse)
async def authenticator_confirm(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                                ua: UserAgentDep, code: CodeField = "",
                                secret: Annotated[str, Form(max_length=128)] = "",
                                uri: Annotated[str, Form(max_length=1024)] = "") -> Response:
    try:
        await accounts.confirm_totp(account_ports(ctx.deps), session=session,
                                    code=code.strip(), client=Client(ip, ua),
                                    now=ctx.deps.clock())
    except SecmsgError as exc:
        # The secret and URI come back from the form only to be shown again; confirmation
        # checks the pending secret kept (sealed) on the account.
        return await _enrol_page(ctx, status=exc.status, error=exc.detail, secret=secret,
                                 uri=uri)
    codes = await selfservice.new_recovery_codes(account_ports(ctx.deps), session=session,
                                                 client=Client(ip, ua), now=ctx.deps.clock())
    return await ctx.page("recovery.html", codes=codes,
                          notice="Authenticator app set up: from now on, signing in also asks "
                                 "for a code from it.")


@router.post("/web/account/authenticator/off", response_class=HTMLResponse)
async def authenticator_off(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                            ua: UserAgentDep, code: CodeField = "") -> Response:
    try:
        await selfservice.disable_totp(account_ports(ctx.deps), session=session, code=code,
                                       client=Client(ip, ua), now=ctx.deps.clock())
    except SecmsgError as exc:
        return await _account(ctx, session, status=exc.status, error=exc.detail)
    return await _account(ctx, session, notice="The authenticator app is off: signing in no "
                                               "longer asks for its code.")


@router.post("/web/account/recovery", response_class=HTMLResponse)
async def recovery_codes(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                         ua: UserAgentDep) -> Response:
    try:
        codes = await selfservice.new_recovery_codes(
            account_ports(ctx.deps), session=session, client=Client(ip, ua),
            now=ctx.deps.clock())
    except SecmsgError as exc:
        return await _account(ctx, session, status=exc.status, error=exc.detail)
    return await ctx.page("recovery.html", codes=codes)


# --- password --------------------------------------------------------------------------------

async def _password_page(ctx: Ctx, session: SessionRecord, *, status: int = 200,
                         error: str | None = None, error_field: str = "") -> HTMLResponse:
    account = await ctx.deps.accounts.get(tenant_id=session.tenant_id, email=session.address)
    return await ctx.page("password.html", status=status, error=error, error_field=error_field,
                          has_password=bool(account and account.password_hash))


@router.get("/web/account/password", response_class=HTMLResponse)
async def password_page(ctx: CtxDep, session: SignedInDep) -> Response:
    return await _password_page(ctx, session)


@router.post("/web/account/password", response_class=HTMLResponse)
async def password_change(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                          ua: UserAgentDep, current: PasswordField = "",
                          new: PasswordField = "") -> Response:
    deps = ctx.deps
    try:
        fresh = await selfservice.change_password(account_ports(deps), session=session,
                                                  current=current or None, new=new,
                                                  client=Client(ip, ua), now=deps.clock())
    except SecmsgError as exc:
        field = "current" if isinstance(exc, Unauthorized) else (
            "new" if isinstance(exc, WeakPassword) else "")
        return await _password_page(ctx, session, status=exc.status, error=exc.detail,
                                    error_field=field)
    # Every session ended (this one too): the new one replaces it in this browser.
    response = RedirectResponse("/web/account?changed=password", status_code=303)
    session_cookie(response, deps, fresh, session.tenant_id)
    return response


# --- sessions --------------------------------------------------------------------------------

@router.post("/web/account/sessions/end", response_class=HTMLResponse)
async def session_end(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                      ua: UserAgentDep,
                      session_id: Annotated[str, Form(max_length=64)] = "") -> Response:
    try:
        await selfservice.end_session(account_ports(ctx.deps), session=session,
                                      target=session_id, client=Client(ip, ua),
                                      now=ctx.deps.clock())
    except NotFound as exc:
        return await _account(ctx, session, status=404, error=exc.detail)
    return await _account(ctx, session, notice="That browser is signed out.")


@router.post("/web/account/sessions/end-others", response_class=HTMLResponse)
async def sessions_end_others(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                              ua: UserAgentDep) -> Response:
    n = await selfservice.end_other_sessions(account_ports(ctx.deps), session=session,
                                             client=Client(ip, ua), now=ctx.deps.clock())
    return await _account(ctx, session, notice=f"Signed out everywhere else ({n} "
                                               f"browser{'s' if n != 1 else ''}).")


# --- connected apps (toolbar tokens) ---------------------------------------------------------

@router.get("/web/account/apps", response_class=HTMLResponse)
async def apps_page(ctx: CtxDep, session: SignedInDep) -> Response:
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
async def apps_revoke(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                      ua: UserAgentDep,
                      token_id: Annotated[str, Form(max_length=64)] = "") -> Response:
    deps = ctx.deps
    try:
        await tokens.revoke_token(tokens=deps.tokens, audit=deps.audit, session=session,
                                  token_id=token_id, now=deps.clock(), client_ip=ip,
                                  user_agent=ua)
    except NotFound:
        return await _apps(ctx, status=404, error="That app is not connected to your account.")
    return await _apps(ctx, notice="Access removed: that app can no longer read or send.")
