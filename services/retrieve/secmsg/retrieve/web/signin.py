"""Sign-in pages: the notification link, the email form, the emailed code, the password and
the authenticator steps, creating an account or resetting the password with an emailed code,
and signing out.

Every page before sign-in is neutral (no tenant name, logo, colour or footer) unless the
genuine notification link justified the brand, so none says whether a tenant exists.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import BackgroundTasks, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import accounts, service
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, DepsDep, UserAgentDep, account_ports
from secmsg.retrieve.passwords import WeakPassword
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import (
    CSP,
    CSP_PASSKEY,
    NEUTRAL,
    TENANT_COOKIE,
    TENANT_COOKIE_MAX_AGE_S,
    CsrfDep,
    CsrfField,
    Ctx,
    CtxDep,
    MessagePath,
    TenantPath,
    hint_matches,
    safe_next,
)
from secmsg.shared.errors import Conflict, SecmsgError, Unauthorized

router = page_router()
# The link page of a known recipient loads /web/static/link.js (no inline script anywhere).
CSP_LINK_PAGE = CSP.replace("default-src 'none';",
                            "default-src 'none'; script-src 'self'; connect-src 'self';")
Intent = Literal["signin", "register", "reset"]  # what the emailed code will be for
NextField = Annotated[str, Form(max_length=300)]
EmailField = Annotated[str, Form(max_length=320)]
CodeField = Annotated[str, Form(max_length=32)]
PasswordField = Annotated[str, Form(max_length=1024)]
ALREADY_REGISTERED = ("this address already has a password: sign in with it, or choose "
                      "“Forgot your password?” on the sign-in page")


@router.get("/m/{tenant_id}/{message_id}", response_class=HTMLResponse)
async def link_page(tenant_id: TenantPath, message_id: MessagePath, ctx: CtxDep,
                    r: Annotated[str, Query(max_length=64)] = "") -> Response:
    # Mail scanners open this link: it reads and changes nothing, it only shows a form.
    target = f"/web/messages/{message_id}"
    session = await ctx.load_session()
    if session is not None and session.tenant_id == tenant_id:
        return RedirectResponse(target, status_code=303)
    # The link names its recipient (keyed hint): pre-fill the address. It names, it does not
    # authenticate -- the emailed code still proves the mailbox.
    # The same hint is the only thing that brands a page before sign-in: every other visitor
    # gets the neutral page, whether or not the tenant or the message exists.
    email = await hint_matches(ctx, tenant_id, message_id, r)
    brand_link = f"m={message_id}&r={quote(r)}" if email else None
    if email is not None:
        policy = await accounts.load_policy(account_ports(ctx.deps), tenant_id)
        if policy.signin == "code":
            # The recipient is known and a code is all it takes: one button, one field, and
            # (with the page's script) no page between them; see link.js.
            return await ctx.page("link.html", tenant_id=tenant_id, csp=CSP_LINK_PAGE,
                                  brand_link=brand_link, email=email, next=target,
                                  action=f"/web/{tenant_id}/signin",
                                  verify_action=f"/web/{tenant_id}/verify")
    return await signin_form(ctx, tenant_id, next_path=target, from_link=True, email=email,
                             branded=email is not None, brand_link=brand_link)


@router.get("/web/{tenant_id}/signin", response_class=HTMLResponse)
async def signin_page(tenant_id: TenantPath, ctx: CtxDep,
                      next: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    return await signin_form(ctx, tenant_id, next_path=safe_next(next), from_link=False)


async def signin_form(ctx: Ctx, tenant_id: str, *, next_path: str, from_link: bool,
                      status: int = 200, branded: bool = False,
                      **values: Any) -> HTMLResponse:
    """The email form; under the policy ``password`` also the password, and wherever a
    password is used, the ways to create one or reset it with an emailed code."""
    policy = await accounts.load_policy(account_ports(ctx.deps), tenant_id)
    return await ctx.page("signin.html", tenant_id=tenant_id if branded else NEUTRAL,
                          csp=CSP_PASSKEY, passkey_tenant=tenant_id,
                          next=next_path, status=status, action=f"/web/{tenant_id}/signin",
                          verify_action=f"/web/{tenant_id}/verify", from_link=from_link,
                          signin=policy.signin, **values)


async def before_signin(ctx: Ctx, name: str, tenant_id: str, next_path: str,
                        **values: Any) -> HTMLResponse:
    """A page of the sign-in steps: neutral (no tenant name, logo, colour or footer), so it
    says nothing about whether ``tenant_id`` exists."""
    return await ctx.page(name, tenant_id=NEUTRAL, next=next_path, **values)


@router.post("/web/{tenant_id}/signin", response_class=HTMLResponse)
async def signin_submit(tenant_id: TenantPath, ctx: CtxDep, _csrf: CsrfDep,
                        background: BackgroundTasks, ip: ClientIpDep, email: EmailField,
                        next: NextField = "",
                        intent: Annotated[Intent, Form()] = "signin") -> Response:
    deps = ctx.deps
    nxt = safe_next(next)
    try:
        req = await service.request_code(tenant_id=tenant_id, email=email, client_ip=ip,
                                         limiter=deps.limiter, settings=deps.settings,
                                         now=deps.clock(), purpose=intent)
    except SecmsgError as exc:
        return await signin_form(ctx, tenant_id, next_path=nxt, from_link=False,
                                 status=exc.status, error=exc.detail, email=email)
    # Also to a registered person whose messages have all expired, and to tenant users.
    background.add_task(service.send_code_if_known, request=req, messages=deps.messages,
                        tenants=deps.tenants, codes=deps.codes, mailer=deps.mailer,
                        settings=deps.settings, now=deps.clock(), accounts=deps.accounts)
    if intent != "signin":
        return await password_form(ctx, tenant_id, email=req.address, next_path=nxt,
                                   reset=intent == "reset")
    policy = await accounts.load_policy(account_ports(deps), tenant_id)
    return await before_signin(ctx, "code.html", tenant_id, nxt, email=req.address,
                               action=f"/web/{tenant_id}/verify", signin=policy.signin,
                               ttl_minutes=max(1, deps.settings.code_ttl_s // 60))


async def password_form(ctx: Ctx, tenant_id: str, *, email: str, next_path: str, reset: bool,
                        status: int = 200, **values: Any) -> HTMLResponse:
    """One step: the emailed code and the (new) password, the rules said up front."""
    return await before_signin(
        ctx, "register.html", tenant_id, next_path, email=email, reset=reset, status=status,
        action=f"/web/{tenant_id}/{'reset' if reset else 'register'}",
        ttl_minutes=max(1, ctx.deps.settings.code_ttl_s // 60), **values)


def session_cookie(response: Response, deps: DepsDep, new: service.NewSession,
                   tenant_id: str) -> None:
    max_age = max(1, int((new.expires_at - deps.clock()).total_seconds()))
    response.set_cookie(deps.settings.cookie_name, new.token, max_age=max_age, path="/",
                        secure=True, httponly=True, samesite="strict")
    # Outlives the session: a later signed-out visit knows which sign-in page to show.
    response.set_cookie(TENANT_COOKIE, tenant_id, max_age=TENANT_COOKIE_MAX_AGE_S, path="/",
                        secure=True, httponly=True, samesite="lax")


def signed_in_to(next_path: str, deps: DepsDep, new: service.NewSession,
                 tenant_id: str) -> RedirectResponse:
    response = RedirectResponse(next_path, status_code=303)
    session_cookie(response, deps, new, tenant_id)
    return response


@router.post("/web/{tenant_id}/verify", response_class=HTMLResponse)
async def verify_submit(tenant_id: TenantPath, ctx: CtxDep, _csrf: CsrfDep, ip: ClientIpDep,
                        ua: UserAgentDep, email: EmailField, code: CodeField = "",
                        password: PasswordField = "", next: NextField = "",
                        step: Annotated[str, Form(max_length=16)] = "") -> Response:
    deps = ctx.deps
    nxt = safe_next(next)
    ports = account_ports(deps)
    try:
        # The tenant's policy decides (code / password / password+code, then TOTP).
        result = await accounts.sign_in(ports, tenant_id=tenant_id, email=email,
                                        code=code.strip() or None, password=password or None,
                                        totp_code=None, client=Client(ip, ua),
                                        now=deps.clock())
    except SecmsgError as exc:
        if step == "password":  # the password form of the sign-in page: back to it
            return await signin_form(ctx, tenant_id, next_path=nxt, from_link=False,
                                     status=exc.status, error=exc.detail, email=email)
        policy = await accounts.load_policy(ports, tenant_id)
        return await before_signin(ctx, "code.html", tenant_id, nxt, email=email,
                                   status=exc.status, error=exc.detail, signin=policy.signin,
                                   action=f"/web/{tenant_id}/verify",
                                   ttl_minutes=max(1, deps.settings.code_ttl_s // 60))
    if result.session is None:
        return await before_signin(ctx, "totp.html", tenant_id, nxt,
                                   ticket=result.mfa_ticket, action=f"/web/{tenant_id}/totp")
    return signed_in_to(nxt, deps, result.session, tenant_id)


@router.post("/web/{tenant_id}/totp", response_class=HTMLResponse)
async def totp_submit(tenant_id: TenantPath, ctx: CtxDep, _csrf: CsrfDep, ip: ClientIpDep,
                      ua: UserAgentDep, ticket: Annotated[str, Form(max_length=512)],
                      totp: Annotated[str, Form(max_length=16)],
                      next: NextField = "") -> Response:
    deps = ctx.deps
    nxt = safe_next(next)
    try:
        new = await accounts.complete_totp(account_ports(deps), ticket=ticket, code=totp.strip(),
                                           client=Client(ip, ua), now=deps.clock())
    except SecmsgError as exc:
        return await before_signin(ctx, "totp.html", tenant_id, nxt, ticket=ticket,
                                   status=exc.status, error=exc.detail,
                                   action=f"/web/{tenant_id}/totp")
    return signed_in_to(nxt, deps, new, tenant_id)


# --- create an account / reset the password (one step: emailed code + password) -------------

def _field_of(exc: SecmsgError) -> str:
    """Which field an account error belongs next to."""
    if isinstance(exc, WeakPassword):
        return "password"
    if isinstance(exc, Unauthorized):
        return "code"
    return "form"


@router.post("/web/{tenant_id}/register", response_class=HTMLResponse)
async def register_submit(tenant_id: TenantPath, ctx: CtxDep, _csrf: CsrfDep, ip: ClientIpDep,
                          ua: UserAgentDep, email: EmailField, code: CodeField = "",
                          password: PasswordField = "", next: NextField = "") -> Response:
    deps = ctx.deps
    nxt = safe_next(next)
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
    return signed_in_to(nxt, deps, new, tenant_id)


@router.post("/web/{tenant_id}/reset", response_class=HTMLResponse)
async def reset_submit(tenant_id: TenantPath, ctx: CtxDep, _csrf: CsrfDep, ip: ClientIpDep,
                       ua: UserAgentDep, email: EmailField, code: CodeField = "",
                       password: PasswordField = "",
                       totp: Annotated[str, Form(max_length=16)] = "",
                       next: NextField = "") -> Response:
    deps = ctx.deps
    nxt = safe_next(next)
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
    return signed_in_to(nxt, deps, new, tenant_id)


# --- sign out --------------------------------------------------------------------------------

@router.post("/web/signout", response_class=HTMLResponse)
async def signout(ctx: CtxDep, csrf_token: CsrfField = "") -> Response:
    # Not SignedInFormDep: an expired session still signs out (and clears its cookie).
    session = await ctx.load_session()
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    deps = ctx.deps
    await service.logout(token=ctx.token, sessions=deps.sessions)
    target = f"/web/{session.tenant_id}/signin" if session else "/web/signed-out"
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(deps.settings.cookie_name, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


@router.get("/web/signed-out", response_class=HTMLResponse)
async def signed_out(ctx: CtxDep) -> Response:
    return await ctx.problem(
        status=200, title="You are signed out",
        text="Open the link in your notification email again to sign in.")
