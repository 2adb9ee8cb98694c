"""The Secure Message Center: server-rendered pages over ``secmsg.retrieve.service``.

Thin like the API routes: decode the form, check CSRF, call the service, render. No page needs
JavaScript; every form posts back here (CSP ``form-action 'self'``).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, BackgroundTasks, Form, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from secmsg.retrieve import accounts, service, tokens
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, DepsDep, UserAgentDep, account_ports
from secmsg.retrieve.ports import MessageRecord, SessionRecord
from secmsg.retrieve.web import csrf
from secmsg.retrieve.web import ingest as ingest_api
from secmsg.retrieve.web.context import WebContext, WebDep, brand_of, lifespan
from secmsg.retrieve.web.filters import when
from secmsg.retrieve.web.sanitize import clean_html
from secmsg.shared.errors import InvalidInput, NotFound, SecmsgError, Unauthorized
from secmsg.shared.subjects import TENANT_ID_RE

log = logging.getLogger(__name__)
ID = r"^[0-9a-f]{32}$"
TenantPath = Annotated[str, Path(pattern=TENANT_ID_RE.pattern)]
MessagePath = Annotated[str, Path(pattern=ID)]
# Where to go after sign-in: a path of this site under /web/ only (never a scheme, a host or
# "//"), so a crafted link cannot send a person elsewhere after they sign in.
_NEXT_RE = re.compile(r"^/web/[A-Za-z0-9/_.=&?%+-]{0,200}$")
# The tenant last signed in to on this browser: where a signed-out visit to /web/inbox (or any
# signed-in page) is sent to sign in. Names the organisation only, never the person.
TENANT_COOKIE = "__Host-secmsg_tenant"
TENANT_COOKIE_MAX_AGE_S = 400 * 24 * 3600
NEUTRAL = ""  # ``Ctx.page(tenant_id=NEUTRAL)``: no tenant's name, logo, colour or footer
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# Only for a message whose sender's images the user chose to load.
CSP_REMOTE_IMAGES = CSP.replace("img-src 'self' data:", "img-src 'self' data: https:")
GONE_STATES = ("expired", "revoked", "recalled")
Intent = Literal["signin", "register", "reset"]  # what the emailed code will be for


# --- page plumbing ---------------------------------------------------------------------------

class Ctx:
    """One request's view of the user: the session (if any), its raw token and the tenant."""

    def __init__(self, request: Request, deps: DepsDep, web: WebDep):
        self.request, self.deps, self.web = request, deps, web
        self.token: str | None = request.cookies.get(deps.settings.cookie_name) or None
        self.session: SessionRecord | None = None
        self.role: str | None = None

    async def load_session(self) -> SessionRecord | None:
        if self.token:
            try:
                # Browser sessions only: a toolbar's bearer token never opens webmail pages.
                self.session = await service.authenticate(
                    token=self.token, sessions=self.deps.sessions,
                    settings=self.deps.settings, now=self.deps.clock(),
                    tokens=self.deps.tokens, accounts=self.deps.accounts, session_only=True)
                self.role = await self.web.queries.role(self.session.tenant_id,
                                                        self.session.address)
            except Unauthorized:
                self.session = None
        return self.session

    def csrf_ok(self, token: object) -> bool:
        return csrf.valid(self.request, self.web.csrf_key,
                          self.token if self.session else None, token)

    async def page(self, name: str, *, tenant_id: str | None = None, status: int = 200,
                   csp: str = CSP, brand_link: str | None = None,
                   **values: Any) -> HTMLResponse:
        """Render ``name``. Branded by ``tenant_id`` (default: the session's tenant;
        ``NEUTRAL``: no tenant). ``brand_link`` is the query (message and recipient hint)
        that justified branding a page before sign-in; the tenant stylesheet needs it too."""
        if tenant_id is None and self.session:
            tenant_id = self.session.tenant_id
        brand = brand_of(await self.web.queries.tenant(tenant_id) if tenant_id else None)
        brand_css = None
        if brand["tenant_id"] and brand["color"]:
            brand_css = f"/web/brand/{brand['tenant_id']}.css" + (
                f"?{brand_link}" if brand_link else "")
        token, fresh = csrf.issue(self.request, self.web.csrf_key,
                                  self.token if self.session else None)
        html = self.web.templates.get_template(name).render(
            brand=brand, brand_css=brand_css, session=self.session, role=self.role,
            csrf=token, csrf_field=csrf.FIELD, **values)
        response = HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
        csrf.set_cookie(response, fresh)
        return response

    async def csrf_refused(self) -> HTMLResponse:
        return await self.problem(status=403, title="This form has expired",
                                  text="For your security the form could not be accepted. Go "
                                       "back, reload the page and try again.")


    async def problem(self, *, status: int, title: str, text: str,
                      headers: dict[str, str] | None = None) -> HTMLResponse:
        """The webmail's own error page: what happened and a way back (the inbox when signed
        in, else this browser's sign-in page)."""
        tenant = _remembered_tenant(self.request)
        back = ("/web/inbox", "Back to your inbox") if self.session else (
            (f"/web/{tenant}/signin", "Sign in") if tenant else None)
        response = await self.page("problem.html", status=status, title=title, text=text,
                                   back=back)
        response.headers.update(headers or {})
        return response


def _safe_next(value: str | None) -> str:
    return value if value and _NEXT_RE.match(value) and "//" not in value else "/web/inbox"


def _remembered_tenant(request: Request) -> str | None:
    value = request.cookies.get(TENANT_COOKIE) or ""
    return value if TENANT_ID_RE.fullmatch(value) else None


async def _signed_in(ctx: Ctx) -> SessionRecord | RedirectResponse:
    session = await ctx.load_session()
    if session is None:
        # Signed out: to this browser's sign-in page, then back here. Without a remembered
        # tenant (a new browser), the page saying to open the notification link again.
        request = ctx.request
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        nxt = _safe_next(here if request.method == "GET" else None)
        tenant = _remembered_tenant(request)
        target = f"/web/{tenant}/signin?next={quote(nxt, safe='/')}" if tenant else \
            "/web/signed-out"
        return RedirectResponse(target, status_code=303)
    return session


async def _hint_matches(ctx: Ctx, tenant_id: str, message_id: str, hint: str) -> str | None:
    """The recipient a notification link's keyed hint (``?r=``) names, else None. Only the
    genuine link of a real message has one, so it shows nothing to someone probing ids."""
    if not hint or not re.fullmatch(ID, message_id):
        return None
    return ctx.deps.keyring.match_recipient_hint(
        tenant_id, message_id, hint, await ctx.web.queries.recipients(tenant_id, message_id))


# --- errors as pages -------------------------------------------------------------------------

def _validation_page(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("loc", ("",))[0] == "path" for e in errors):
        return 404, "This link is not valid", ("The address is not complete or not right. "
                                                "Open the link from your email again, or "
                                                "copy all of it.")
    first = errors[0] if errors else {}
    field = str(first.get("loc", ("", "form"))[-1])
    return 422, "The form could not be read", (
        f"{field}: {first.get('msg', 'invalid')}. Go back, check what you typed and try "
        "again.")


async def error_page(request: Request, exc: Exception) -> Response:
    """The answer a person's browser gets instead of retrieve's JSON error."""
    deps, web = request.app.state.deps, request.app.state.webmail
    assert isinstance(web, WebContext)
    ctx = Ctx(request, deps, web)
    await ctx.load_session()
    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        status, title, text = _validation_page(exc)
    elif isinstance(exc, StarletteHTTPException) and exc.status_code == 404:
        status, title, text = 404, "Page not found", (
            "There is no page at this address. It may have been mistyped or moved.")
    elif isinstance(exc, StarletteHTTPException):
        status, title, text = exc.status_code, "This request could not be handled", str(
            exc.detail)
    elif isinstance(exc, SecmsgError):
        status, title, text = exc.status, "This could not be done", exc.detail
        if isinstance(exc, service.RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
            title = "Too many attempts"
    else:
        raise exc
    return await ctx.problem(status=status, title=title, text=text, headers=headers)


class PageRoute(APIRoute):
    """A webmail route: a refused path, query or form field, or a domain error no handler
    explained, is the webmail's own error page (HTML, same status), never the API's JSON."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, StarletteHTTPException, SecmsgError) as exc:
                return await error_page(request, exc)

        return page_handler


router = APIRouter(include_in_schema=False, lifespan=lifespan, route_class=PageRoute)


# --- sign-in ---------------------------------------------------------------------------------

@router.get("/m/{tenant_id}/{message_id}", response_class=HTMLResponse)
async def link_page(tenant_id: TenantPath, message_id: MessagePath, request: Request,
                    deps: DepsDep, web: WebDep,
                    r: Annotated[str, Query(max_length=64)] = "") -> Response:
    # Mail scanners open this link: it reads and changes nothing, it only shows a form.
    ctx = Ctx(request, deps, web)
    target = f"/web/messages/{message_id}"
    session = await ctx.load_session()
    if session is not None and session.tenant_id == tenant_id:
        return RedirectResponse(target, status_code=303)
    # The link names its recipient (keyed hint): pre-fill the address. It names, it does not
    # authenticate -- the emailed code still proves the mailbox.
    # The same hint is the only thing that brands a page before sign-in: every other visitor
    # gets the neutral page, whether or not the tenant or the message exists.
    email = await _hint_matches(ctx, tenant_id, message_id, r)
    return await _signin_form(ctx, tenant_id, next_path=target, from_link=True, email=email,
                              branded=email is not None,
                              brand_link=f"m={message_id}&r={quote(r)}" if email else None)


@router.get("/web/{tenant_id}/signin", response_class=HTMLResponse)
async def signin_page(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                      next: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    ctx = Ctx(request, deps, web)
    return await _signin_form(ctx, tenant_id, next_path=_safe_next(next), from_link=False)


async def _signin_form(ctx: Ctx, tenant_id: str, *, next_path: str, from_link: bool,
                       status: int = 200, branded: bool = False,
                       **values: Any) -> HTMLResponse:
    """The email form; under the policy ``password`` also the password, and wherever a
    password is used, the ways to create one or reset it with an emailed code."""
    policy = await accounts.load_policy(account_ports(ctx.deps), tenant_id)
    return await ctx.page("signin.html", tenant_id=tenant_id if branded else NEUTRAL,
                          next=next_path, status=status, action=f"/web/{tenant_id}/signin",
                          verify_action=f"/web/{tenant_id}/verify", from_link=from_link,
                          signin=policy.signin, **values)


async def _before_signin(ctx: Ctx, name: str, tenant_id: str, next_path: str,
                         **values: Any) -> HTMLResponse:
    """A page of the sign-in steps: neutral (no tenant name, logo, colour or footer), so it
    says nothing about whether ``tenant_id`` exists."""
    return await ctx.page(name, tenant_id=NEUTRAL, next=next_path, **values)


@router.post("/web/{tenant_id}/signin", response_class=HTMLResponse)
async def signin_submit(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                        background: BackgroundTasks, ip: ClientIpDep,
                        email: Annotated[str, Form(max_length=320)],
                        csrf_token: Annotated[str, Form(alias="csrf", max_length=128)] = "",
                        next: Annotated[str, Form(max_length=300)] = "",
                        intent: Annotated[Intent, Form()] = "signin") -> Response:
    ctx = Ctx(request, deps, web)
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    nxt = _safe_next(next)
    try:
        req = await service.request_code(tenant_id=tenant_id, email=email, client_ip=ip,
                                         limiter=deps.limiter, settings=deps.settings,
                                         now=deps.clock(), purpose=intent)
    except SecmsgError as exc:
        return await _signin_form(ctx, tenant_id, next_path=nxt, from_link=False,
                                  status=exc.status, error=exc.detail, email=email)
    # Also to a registered person whose messages have all expired, and to tenant users.
    background.add_task(service.send_code_if_known, request=req, messages=deps.messages,
                        tenants=deps.tenants, codes=deps.codes, mailer=deps.mailer,
                        settings=deps.settings, now=deps.clock(), accounts=deps.accounts)
    if intent != "signin":
        return await password_form(ctx, tenant_id, email=req.address, next_path=nxt,
                                   reset=intent == "reset")
    policy = await accounts.load_policy(account_ports(deps), tenant_id)
    return await _before_signin(ctx, "code.html", tenant_id, nxt, email=req.address,
                                action=f"/web/{tenant_id}/verify", signin=policy.signin,
                                ttl_minutes=max(1, deps.settings.code_ttl_s // 60))


async def password_form(ctx: Ctx, tenant_id: str, *, email: str, next_path: str, reset: bool,
                        status: int = 200, **values: Any) -> HTMLResponse:
    """One step: the emailed code and the (new) password, the rules said up front."""
    return await _before_signin(
        ctx, "register.html", tenant_id, next_path, email=email, reset=reset, status=status,
        action=f"/web/{tenant_id}/{'reset' if reset else 'register'}",
        ttl_minutes=max(1, ctx.deps.settings.code_ttl_s // 60), **values)


def _session_cookie(response: Response, deps: DepsDep, new: service.NewSession,
                    tenant_id: str) -> None:
    max_age = max(1, int((new.expires_at - deps.clock()).total_seconds()))
    response.set_cookie(deps.settings.cookie_name, new.token, max_age=max_age, path="/",
                        secure=True, httponly=True, samesite="strict")
    # Outlives the session: a later signed-out visit knows which sign-in page to show.
    response.set_cookie(TENANT_COOKIE, tenant_id, max_age=TENANT_COOKIE_MAX_AGE_S, path="/",
                        secure=True, httponly=True, samesite="lax")


@router.post("/web/{tenant_id}/verify", response_class=HTMLResponse)
async def verify_submit(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                        ip: ClientIpDep, ua: UserAgentDep,
                        email: Annotated[str, Form(max_length=320)],
                        code: Annotated[str, Form(max_length=32)] = "",
                        password: Annotated[str, Form(max_length=1024)] = "",
                        csrf_token: Annotated[str, Form(alias="csrf", max_length=128)] = "",
                        next: Annotated[str, Form(max_length=300)] = "",
                        step: Annotated[str, Form(max_length=16)] = "") -> Response:
    ctx = Ctx(request, deps, web)
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    nxt = _safe_next(next)
    ports = account_ports(deps)
    try:
        # The tenant's policy decides (code / password / password+code, then TOTP).
        result = await accounts.sign_in(ports, tenant_id=tenant_id, email=email,
                                        code=code.strip() or None, password=password or None,
                                        totp_code=None, client=Client(ip, ua),
                                        now=deps.clock())
    except SecmsgError as exc:
        if step == "password":  # the password form of the sign-in page: back to it
            return await _signin_form(ctx, tenant_id, next_path=nxt, from_link=False,
                                      status=exc.status, error=exc.detail, email=email)
        policy = await accounts.load_policy(ports, tenant_id)
        return await _before_signin(ctx, "code.html", tenant_id, nxt, email=email,
                                    status=exc.status, error=exc.detail, signin=policy.signin,
                                    action=f"/web/{tenant_id}/verify",
                                    ttl_minutes=max(1, deps.settings.code_ttl_s // 60))
    if result.session is None:
        return await _before_signin(ctx, "totp.html", tenant_id, nxt,
                                    ticket=result.mfa_ticket, action=f"/web/{tenant_id}/totp")
    response = RedirectResponse(nxt, status_code=303)
    _session_cookie(response, deps, result.session, tenant_id)
    return response


@router.post("/web/{tenant_id}/totp", response_class=HTMLResponse)
async def totp_submit(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                      ip: ClientIpDep, ua: UserAgentDep,
                      ticket: Annotated[str, Form(max_length=512)],
                      totp: Annotated[str, Form(max_length=16)],
                      csrf_token: Annotated[str, Form(alias="csrf", max_length=128)] = "",
                      next: Annotated[str, Form(max_length=300)] = "") -> Response:
    ctx = Ctx(request, deps, web)
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    nxt = _safe_next(next)
    try:
        new = await accounts.complete_totp(account_ports(deps), ticket=ticket, code=totp.strip(),
                                           client=Client(ip, ua), now=deps.clock())
    except SecmsgError as exc:
        return await _before_signin(ctx, "totp.html", tenant_id, nxt, ticket=ticket,
                                    status=exc.status, error=exc.detail,
                                    action=f"/web/{tenant_id}/totp")
    response = RedirectResponse(nxt, status_code=303)
    _session_cookie(response, deps, new, tenant_id)
    return response


@router.post("/web/signout", response_class=HTMLResponse)
async def signout(request: Request, deps: DepsDep, web: WebDep,
                  csrf_token: Annotated[str, Form(alias="csrf", max_length=128)] = "") -> Response:
    ctx = Ctx(request, deps, web)
    session = await ctx.load_session()
    if not ctx.csrf_ok(csrf_token):
        return await ctx.csrf_refused()
    await service.logout(token=ctx.token, sessions=deps.sessions)
    target = f"/web/{session.tenant_id}/signin" if session else "/web/signed-out"
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(deps.settings.cookie_name, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


@router.get("/web/signed-out", response_class=HTMLResponse)
async def signed_out(request: Request, deps: DepsDep, web: WebDep) -> Response:
    return await Ctx(request, deps, web).problem(
        status=200, title="You are signed out",
        text="Open the link in your notification email again to sign in.")


# --- inbox and message -----------------------------------------------------------------------

def _matches(r: MessageRecord, q: str) -> bool:
    return q in r.sender.lower() or q in r.subject.lower()


async def _search(*, session: SessionRecord, deps: DepsDep, q: str, cursor: str | None,
                  limit: int) -> tuple[list[MessageRecord], str | None]:
    """One page of matches: the service's pages, filtered, scanning at most 1000 messages
    per request (the next-page cursor resumes where the scan stopped)."""
    if not q:
        return await service.list_messages(session=session, messages=deps.messages,
                                           limit=limit, cursor=cursor, now=deps.clock())
    found: list[MessageRecord] = []
    scanned = 0
    while True:
        page, nxt = await service.list_messages(session=session, messages=deps.messages,
                                                limit=200, cursor=cursor, now=deps.clock())
        for r in page:
            scanned += 1
            if _matches(r, q):
                found.append(r)
                if len(found) == limit:
                    more = r is not page[-1] or nxt is not None
                    return found, service.encode_cursor(r) if more else None
        if nxt is None:
            return found, None
        cursor = nxt
        if scanned >= 1000:
            return found, cursor


@router.get("/web/inbox", response_class=HTMLResponse)
async def inbox(request: Request, deps: DepsDep, web: WebDep,
                q: Annotated[str, Query(max_length=200)] = "",
                cursor: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    query = q.strip().lower()
    try:
        page, nxt = await _search(session=session, deps=deps, q=query, cursor=cursor,
                                  limit=web.settings.web_page_size)
    except InvalidInput:
        return RedirectResponse("/web/inbox", status_code=303)
    opened = await web.queries.opened(session.tenant_id, session.address,
                                      [r.message_id for r in page])
    next_url = None
    if nxt:
        next_url = "/web/inbox?" + (f"q={quote(q.strip())}&" if query else "") + \
            f"cursor={quote(nxt)}"
    return await ctx.page("inbox.html", messages=page, opened=opened, q=q.strip(),
                          next_url=next_url, first_page=cursor is None)


def _visible_recipients(r: MessageRecord, me: str) -> list[Any]:
    # Nobody learns who else was blind-copied; a bcc recipient sees only themselves as such.
    return [x for x in r.recipients if x.kind != "bcc" or x.address.lower() == me]


async def _gone_page(ctx: Ctx, session: SessionRecord, message_id: str,
                     reason: str | None = None) -> Response:
    reason = reason or await ctx.web.queries.why_gone(session.tenant_id, session.address,
                                                      message_id, ctx.deps.clock())
    if reason in GONE_STATES:
        return await ctx.page("gone.html", status=410, reason=reason)
    return await ctx.page("problem.html", status=404, title="Message not found",
                          text="There is no message here for the address you signed in with.")


def _gone_reason(exc: SecmsgError) -> str | None:
    """The reason carried by retrieve's 410 (revoked / recalled), whatever its exact class."""
    if exc.status != 410:
        return None
    for word in GONE_STATES:
        if word in (exc.code, *str(exc.detail).split()):
            return word
    return "revoked"


async def _read(ctx: Ctx, session: SessionRecord, message_id: str, ip: str,
                ua: str | None) -> service.MessageView | Response:
    """The message (opening is audited), or the page saying why it cannot be opened."""
    deps = ctx.deps
    try:
        return await service.read_message(session=session, message_id=message_id,
                                          messages=deps.messages, blobs=deps.blobs,
                                          keyring=deps.keyring, audit=deps.audit,
                                          client_ip=ip, user_agent=ua, now=deps.clock(),
                                          max_body_bytes=deps.settings.max_body_bytes)
    except NotFound:
        return await _gone_page(ctx, session, message_id)
    except SecmsgError as exc:
        if (reason := _gone_reason(exc)) is not None:
            return await _gone_page(ctx, session, message_id, reason)
        raise


@router.get("/web/messages/{message_id}", response_class=HTMLResponse)
async def message_page(message_id: MessagePath, request: Request, deps: DepsDep, web: WebDep,
                       ip: ClientIpDep, ua: UserAgentDep,
                       images: Annotated[int, Query(ge=0, le=1)] = 0) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    view = await _read(ctx, session, message_id, ip, ua)
    if isinstance(view, Response):
        return view
    r = view.record
    body = clean_html(view.html, allow_remote_images=bool(images)) if view.html else None
    return await ctx.page(
        "message.html", csp=CSP_REMOTE_IMAGES if images and body else CSP, m=r,
        recipients=_visible_recipients(r, session.address), html=body.html if body else None,
        blocked_images=body.blocked_images if body else 0, text=view.text,
        attachments=[o for o in r.objects if o.role == "attachment"])


@router.get("/web/out", response_class=HTMLResponse)
async def outbound(request: Request, deps: DepsDep, web: WebDep,
                   u: Annotated[str, Query(max_length=4000)] = "") -> Response:
    ctx = Ctx(request, deps, web)
    await ctx.load_session()
    parts = urlsplit(u)
    ok = parts.scheme.lower() in ("http", "https", "mailto") and not any(
        ord(c) < 32 for c in u)
    return await ctx.page("out.html", status=200 if ok else 400, target=u if ok else None,
                          host=parts.hostname or "")


@router.get("/web/brand/{tenant_id}.css")
async def brand_css(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                    m: Annotated[str, Query(max_length=32)] = "",
                    r: Annotated[str, Query(max_length=64)] = "") -> Response:
    # The colour only to someone signed in to the tenant or holding the genuine link of one
    # of its messages (``m`` and its hint ``r``): an empty answer for everyone else, so it
    # tells nothing about whether the tenant exists.
    ctx = Ctx(request, deps, web)
    session = await ctx.load_session()
    allowed = (session is not None and session.tenant_id == tenant_id) or (
        await _hint_matches(ctx, tenant_id, m, r) is not None)
    brand = brand_of(await web.queries.tenant(tenant_id) if allowed else None)
    css = f":root {{ --brand: {brand['color']}; }}\n" if brand["color"] else ""
    return Response(css, media_type="text/css",
                    headers={"Cache-Control": "private, max-age=300"})


# --- compose, reply, send --------------------------------------------------------------------

_SPLIT = re.compile(r"[,;\s]+")
MAX_FORM_PART = 4 * 1024 * 1024  # ingest's envelope limit; larger text would be refused there
SEND_FORM_UNREADABLE = ("The message could not be read: it may have too many attachments or "
                        "too much text. Nothing was sent")
SEND_FORM_EXPIRED = ("For your security this form could not be accepted (it was opened before "
                     "your last sign-in or sign-out). Check the message and send it again.")


def _addresses(value: object) -> list[str]:
    return [a for a in _SPLIT.split(value if isinstance(value, str) else "") if a][:100]


def _re(subject: str) -> str:
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}".strip()


def _quote(text: str | None, sender: str, at: str) -> str:
    if not text:
        return ""
    quoted = "\n".join("> " + line for line in text[:20000].splitlines())
    return f"\n\nOn {at}, {sender} wrote:\n{quoted}\n"


async def _compose_page(ctx: Ctx, session: SessionRecord, *, status: int = 200,
                        **values: Any) -> HTMLResponse:
    # Someone who is not a tenant user may only write to people at the tenant who wrote to
    # them (ingest enforces it); offer those addresses.
    suggestions: list[str] = []
    if ctx.role is None:
        page, _ = await service.list_messages(session=session, messages=ctx.deps.messages,
                                              limit=200, cursor=None, now=ctx.deps.clock())
        suggestions = sorted({r.sender for r in page})
    form = {"to": "", "cc": "", "bcc": "", "subject": "", "text": "", "in_reply_to": "",
            **values.pop("form", {})}
    return await ctx.page("compose.html", status=status, form=form, suggestions=suggestions,
                          max_attachments=ctx.web.settings.web_max_attachments, **values)


@router.get("/web/compose", response_class=HTMLResponse)
async def compose(request: Request, deps: DepsDep, web: WebDep) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    return await _compose_page(ctx, session, heading="New secure message")


@router.get("/web/messages/{message_id}/reply", response_class=HTMLResponse)
async def reply(message_id: MessagePath, request: Request, deps: DepsDep, web: WebDep,
                ip: ClientIpDep, ua: UserAgentDep,
                all: Annotated[int, Query(ge=0, le=1)] = 0) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    view = await _read(ctx, session, message_id, ip, ua)
    if isinstance(view, Response):
        return view
    r = view.record
    me = session.address
    cc: list[str] = []
    if all:
        cc = [x.address for x in r.recipients
              if x.kind in ("to", "cc") and x.address.lower() not in (me, r.sender.lower())]
    return await _compose_page(
        ctx, session, heading="Reply all" if all else "Reply", replying_to=r,
        form={"to": r.sender, "cc": ", ".join(cc), "subject": _re(r.subject),
              "text": _quote(view.text, r.sender, when(r.received_at)),
              "in_reply_to": r.message_id})


@router.post("/web/send", response_class=HTMLResponse)
async def send(request: Request, deps: DepsDep, web: WebDep, ip: ClientIpDep,
               ua: UserAgentDep) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    # File parts are spooled to disk by Starlette beyond 1 MiB; ingest.submit streams them.
    try:
        form = await request.form(max_files=web.settings.web_max_attachments, max_fields=20,
                                  max_part_size=MAX_FORM_PART)
    except StarletteHTTPException as exc:
        # Too many attachments, a text part over the limit, a broken upload: a page that
        # says so (Starlette's own reason), not the API's JSON error.
        return await _compose_page(ctx, session, status=400,
                                   heading="Your message was not sent",
                                   error=f"{SEND_FORM_UNREADABLE} ({exc.detail})",
                                   files_lost=True)
    try:
        fields = {k: str(form.get(k) or "") for k in
                  ("to", "cc", "bcc", "subject", "text", "in_reply_to")}
        files = [f for f in form.getlist("attachment")
                 if isinstance(f, UploadFile) and (f.filename or f.size)]
        if not ctx.csrf_ok(form.get(csrf.FIELD)):
            # Nothing is sent, but the typed message comes back in a fresh form: a page
            # served no-store may not survive the Back button.
            return await _compose_page(ctx, session, status=403, form=fields,
                                       heading="Your message was not sent",
                                       error=SEND_FORM_EXPIRED, files_lost=bool(files))
        envelope: dict[str, Any] = {
            "from": session.address, "to": _addresses(fields["to"]),
            "cc": _addresses(fields["cc"]), "subject": fields["subject"].strip(),
            "text": fields["text"]}
        if ctx.role is not None and fields["bcc"]:
            envelope["bcc"] = _addresses(fields["bcc"])
        if re.fullmatch(ID, fields["in_reply_to"]):
            envelope["in_reply_to"] = fields["in_reply_to"]
        try:
            issued = await tokens.issue_webmail_send_token(
                tokens=deps.tokens, accounts=deps.accounts, audit=deps.audit,
                session=session, now=deps.clock(), client_ip=ip, user_agent=ua)
            message_id = await ingest_api.submit(
                http=web.http, ingest_url=deps.settings.ingest_url, token=issued.token,
                envelope=envelope, files=files)
        except ingest_api.IngestRefused as exc:
            status = exc.status if 400 <= exc.status < 600 else 502
            return await _compose_page(ctx, session, status=status, form=fields,
                                       heading="Your message was not sent", error=exc.detail,
                                       files_lost=bool(files))
    finally:
        await form.close()  # removes the spooled attachment files
    log.info("webmail message submitted", extra={"event": "webmail.sent"})
    return await ctx.page("sent_ok.html", message_id=message_id,
                          recipients=envelope["to"] + envelope["cc"])


# --- what I sent: list and delivery slip -----------------------------------------------------

@router.get("/web/sent", response_class=HTMLResponse)
async def sent_list(request: Request, deps: DepsDep, web: WebDep) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    docs = await web.queries.sent(session.tenant_id, session.address, 100)
    return await ctx.page("sent.html", messages=docs)


@router.get("/web/sent/{message_id}", response_class=HTMLResponse)
async def sent_slip(message_id: MessagePath, request: Request, deps: DepsDep, web: WebDep,
                    ip: ClientIpDep, ua: UserAgentDep) -> Response:
    ctx = Ctx(request, deps, web)
    session = await _signed_in(ctx)
    if isinstance(session, Response):
        return session
    doc = await web.queries.sent_one(session.tenant_id, session.address, message_id)
    if doc is None:
        return await ctx.page("problem.html", status=404, title="Message not found",
                              text="You did not send a message with this link.")
    slip: dict[str, Any] | None = None
    slip_error = None
    try:
        issued = await tokens.issue_webmail_send_token(
            tokens=deps.tokens, accounts=deps.accounts, audit=deps.audit, session=session,
            now=deps.clock(), client_ip=ip, user_agent=ua)
        slip = await ingest_api.slip(http=web.http, ingest_url=deps.settings.ingest_url,
                                     token=issued.token, message_id=message_id)
    except ingest_api.IngestRefused as exc:
        slip_error = exc.detail
    return await ctx.page("slip.html", m=doc, slip=slip, slip_error=slip_error,
                          rows=_slip_rows(slip))


def _at(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return when(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _slip_rows(slip: dict[str, Any] | None) -> list[dict[str, Any]]:
    """ingest's slip (``GET /v1/messages/{id}/slip``) as table rows, times formatted."""
    rows = []
    for r in (slip or {}).get("recipients") or []:
        if not isinstance(r, dict):
            continue
        downloads = [d for d in r.get("downloads") or [] if isinstance(d, dict)]
        rows.append({
            "address": str(r.get("address", "")), "kind": str(r.get("kind", "")),
            "state": r.get("notification_state"), "at": _at(r.get("notification_at")),
            "reason": r.get("notification_reason"), "opened": _at(r.get("first_opened_at")),
            "downloads": len(downloads),
            "last_download": _at(downloads[-1].get("at")) if downloads else None,
            "access": r.get("access") or "open"})
    return rows


# --- what no page above answers (installed after the static files) --------------------------

fallback = APIRouter(include_in_schema=False, route_class=PageRoute)
_POST_ONLY_STEPS = ("verify", "totp", "register", "reset")


@fallback.get("/web/{tenant_id}/{step}", response_class=HTMLResponse)
async def step_reopened(tenant_id: str, step: str) -> Response:
    """A sign-in step opened by address (a bookmark, a reload after the session ended): the
    sign-in page it belongs to."""
    if step in _POST_ONLY_STEPS and TENANT_ID_RE.fullmatch(tenant_id):
        return RedirectResponse(f"/web/{tenant_id}/signin", status_code=303)
    raise StarletteHTTPException(404)


@fallback.api_route("/web/{rest:path}", methods=["GET", "HEAD", "POST"],
                    response_class=HTMLResponse)
@fallback.api_route("/m/{rest:path}", methods=["GET", "HEAD", "POST"],
                    response_class=HTMLResponse)
async def no_such_page(rest: str) -> Response:
    raise StarletteHTTPException(404)
