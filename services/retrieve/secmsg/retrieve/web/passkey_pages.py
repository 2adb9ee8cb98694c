"""Passkey pages of the Secure Message Center: add, list and remove passkeys (signed in), and
sign in with one (the sign-in page's "Sign in with a passkey").

The browser part is ``static/passkey.js``, the webmail's only script (these pages' CSP,
``CSP_PASSKEY``, allows ``script-src 'self'`` and ``connect-src 'self'``). It asks
``navigator.credentials`` and puts the answer in an ordinary form, which posts here with its
CSRF token like every other. Every decision is ``passkeys``'.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Form
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from secmsg.retrieve import passkeys
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, DepsDep, UserAgentDep, passkey_ports
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import (
    CSP_PASSKEY,
    CsrfDep,
    Ctx,
    CtxDep,
    SignedInDep,
    SignedInFormDep,
    TenantPath,
    safe_next,
)
from secmsg.retrieve.web.signin import session_cookie, signin_form
from secmsg.shared.errors import SecmsgError

router = page_router()
CredentialField = Annotated[str, Form(max_length=passkeys.MAX_CREDENTIAL_JSON)]
TicketField = Annotated[str, Form(max_length=1024)]


# --- account: add, list, remove --------------------------------------------------------------

async def _page(ctx: Ctx, *, status: int = 200, notice: str | None = None,
                error: str | None = None) -> HTMLResponse:
    assert ctx.session is not None
    p = passkey_ports(ctx.deps)
    ceremony, refused = None, None
    try:
        ceremony = await passkeys.registration_options(p, session=ctx.session,
                                                       now=ctx.deps.clock())
    except SecmsgError as exc:  # not allowed by the tenant, or too many
        refused = exc.detail
    return await ctx.page(
        "passkeys.html", title="Passkeys", status=status, notice=notice, error=error,
        refused=refused, ceremony=ceremony, csp=CSP_PASSKEY,
        options=json.loads(ceremony.options_json) if ceremony else None,
        keys=await passkeys.list_passkeys(p, session=ctx.session))


@router.get("/web/account/passkeys", response_class=HTMLResponse)
async def passkeys_page(ctx: CtxDep, session: SignedInDep) -> Response:
    return await _page(ctx)


@router.post("/web/account/passkeys", response_class=HTMLResponse)
async def passkeys_add(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                       ua: UserAgentDep, ticket: TicketField = "",
                       credential: CredentialField = "",
                       name: Annotated[str, Form(max_length=200)] = "") -> Response:
    if not credential:
        return await _page(ctx, status=400, error="No passkey was created. Try again; your "
                                                  "browser or device asks you to confirm.")
    try:
        added = await passkeys.register(passkey_ports(ctx.deps), session=session, ticket=ticket,
                                        credential=credential, name=name,
                                        client=Client(ip, ua), now=ctx.deps.clock())
    except SecmsgError as exc:
        return await _page(ctx, status=exc.status, error=exc.detail)
    return await _page(ctx, notice=f"Passkey “{added.name}” added. Next time, choose "
                                   "“Sign in with a passkey” on the sign-in page.")


@router.post("/web/account/passkeys/remove", response_class=HTMLResponse)
async def passkeys_remove(ctx: CtxDep, session: SignedInFormDep, ip: ClientIpDep,
                          ua: UserAgentDep,
                          credential_id: Annotated[str, Form(max_length=1400)] = "") -> Response:
    try:
        await passkeys.remove(passkey_ports(ctx.deps), session=session,
                              credential_id=credential_id, client=Client(ip, ua),
                              now=ctx.deps.clock())
    except SecmsgError as exc:
        return await _page(ctx, status=exc.status, error=exc.detail)
    return await _page(ctx, notice="Passkey removed: it can no longer sign you in. Remove it "
                                   "from your device too.")


# --- sign in with a passkey ------------------------------------------------------------------

@router.post("/web/{tenant_id}/passkey/options")
async def signin_options(tenant_id: TenantPath, deps: DepsDep) -> JSONResponse:
    """A challenge for the sign-in page's script: the same for every tenant id (it creates
    nothing and says nothing about the tenant)."""
    ceremony = await passkeys.signin_options(passkey_ports(deps), tenant_id=tenant_id,
                                             now=deps.clock())
    return JSONResponse({"options": ceremony.options_json, "ticket": ceremony.ticket},
                        headers={"Cache-Control": "no-store"})


@router.post("/web/{tenant_id}/passkey", response_class=HTMLResponse)
async def signin_submit(tenant_id: TenantPath, ctx: CtxDep, _csrf: CsrfDep, ip: ClientIpDep,
                        ua: UserAgentDep, ticket: TicketField = "",
                        credential: CredentialField = "",
                        next: Annotated[str, Form(max_length=300)] = "") -> Response:
    nxt = safe_next(next)
    deps = ctx.deps
    try:
        new = await passkeys.sign_in(passkey_ports(deps), tenant_id=tenant_id, ticket=ticket,
                                     credential=credential, client=Client(ip, ua),
                                     now=deps.clock())
    except SecmsgError as exc:
        return await signin_form(ctx, tenant_id, next_path=nxt, from_link=False,
                                 status=exc.status, error=f"Passkey: {exc.detail}")
    response = RedirectResponse(nxt, status_code=303)
    session_cookie(response, deps, new, tenant_id)
    return response
