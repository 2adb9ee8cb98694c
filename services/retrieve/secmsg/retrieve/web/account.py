"""My account: the account page, the authenticator app and connected apps (toolbar tokens).

Thin like the other pages: every decision is ``accounts`` or ``tokens``; these handlers only
call them and explain the answer (sign-in and CSRF are the ``SignedInDep``/``SignedInFormDep``
dependencies).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form
from fastapi.responses import HTMLResponse, Response

from secmsg.retrieve import accounts, tokens
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, UserAgentDep, account_ports
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import Ctx, CtxDep, SignedInDep, SignedInFormDep
from secmsg.shared.errors import NotFound, SecmsgError

router = page_router()
CodeField = Annotated[str, Form(max_length=32)]


@router.get("/web/account", response_class=HTMLResponse)
async def account_page(ctx: CtxDep, session: SignedInDep) -> Response:
    deps = ctx.deps
    account = await deps.accounts.get(tenant_id=session.tenant_id, email=session.address)
    policy = await accounts.load_policy(account_ports(deps), session.tenant_id)
    return await ctx.page("account.html", title="Your account", policy=policy,
                          has_password=bool(account and account.password_hash),
                          totp_enabled=bool(account and account.totp_secret_sealed))


@router.post("/web/account/authenticator", response_class=HTMLResponse)
async def authenticator_start(ctx: CtxDep, session: SignedInFormDep) -> Response:
    try:
        enrol = await accounts.start_totp(account_ports(ctx.deps), session=session,
                                          now=ctx.deps.clock())
    except SecmsgError as exc:
        return await ctx.page("problem.html", status=exc.status,
                              title="Authenticator apps are not available", text=exc.detail)
    return await ctx.page("authenticator.html", secret=enrol.secret, uri=enrol.uri)


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
        return await ctx.page("authenticator.html", status=exc.status, error=exc.detail,
                              secret=secret, uri=uri)
    return await ctx.page("problem.html", title="Authenticator app set up",
                          text="From now on, signing in also asks for a code from your "
                               "authenticator app.")


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
