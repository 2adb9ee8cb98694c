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
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from secmsg.retrieve import accounts, service, tokens
from secmsg.retrieve.accounts import Client
from secmsg.retrieve.deps import ClientIpDep, DepsDep, UserAgentDep, account_ports
from secmsg.retrieve.ports import MessageRecord, SessionRecord
from secmsg.retrieve.web import csrf
from secmsg.retrieve.web import ingest as ingest_api
from secmsg.retrieve.web.context import WebDep, brand_of, lifespan
from secmsg.retrieve.web.filters import when
from secmsg.retrieve.web.sanitize import clean_html
from secmsg.shared.errors import InvalidInput, NotFound, SecmsgError, Unauthorized
from secmsg.shared.subjects import TENANT_ID_RE

log = logging.getLogger(__name__)
ID = r"^[0-9a-f]{32}$"
TenantPath = Annotated[str, Path(pattern=TENANT_ID_RE.pattern)]
MessagePath = Annotated[str, Path(pattern=ID)]
_NEXT_RE = re.compile(r"^/web/[A-Za-z0-9/_.=&?-]{0,200}$")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# Only for a message whose sender's images the user chose to load.
CSP_REMOTE_IMAGES = CSP.replace("img-src 'self' data:", "img-src 'self' data: https:")
GONE_STATES = ("expired", "revoked", "recalled")
Intent = Literal["signin", "register", "reset"]  # what the emailed code will be for

router = APIRouter(include_in_schema=False, lifespan=lifespan)


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
                   csp: str = CSP, **values: Any) -> HTMLResponse:
        tenant_id = tenant_id or (self.session.tenant_id if self.session else None)
        brand = brand_of(await self.web.queries.tenant(tenant_id) if tenant_id else None)
        token, fresh = csrf.issue(self.request, self.web.csrf_key,
                                  self.token if self.session else None)
        html = self.web.templates.get_template(name).render(
            brand=brand, session=self.session, role=self.role, csrf=token,
            csrf_field=csrf.FIELD, **values)
        response = HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
        csrf.set_cookie(response, fresh)
        return response

    async def csrf_refused(self) -> HTMLResponse:
        return await self.page("problem.html", status=403, title="This form has expired",
                               text="For your security the form could not be accepted. Go "
                                    "back, reload the page and try again.")


def _safe_next(value: str | None) -> str:
    return value if value and _NEXT_RE.match(value) and "//" not in value else "/web/inbox"


async def _signed_in(ctx: Ctx) -> SessionRecord | RedirectResponse:
    session = await ctx.load_session()
    if session is None:
        # The tenant of an expired session is unknown; the sign-in page needs one.
        return RedirectResponse("/web/signed-out", status_code=303)
    return session


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
    email = None
    if r:
        email = deps.keyring.match_recipient_hint(
            tenant_id, message_id, r, await web.queries.recipients(tenant_id, message_id))
    return await _signin_form(ctx, tenant_id, next_path=target, from_link=True, email=email)


@router.get("/web/{tenant_id}/signin", response_class=HTMLResponse)
async def signin_page(tenant_id: TenantPath, request: Request, deps: DepsDep, web: WebDep,
                      next: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    ctx = Ctx(request, deps, web)
    return await _signin_form(ctx, tenant_id, next_path=_safe_next(next), from_link=False)


async def _signin_form(ctx: Ctx, tenant_id: str, *, next_path: str, from_link: bool,
                       status: int = 200, **values: Any) -> HTMLResponse:
    """The email form; under the policy ``password`` also the password, and wherever a
    password is used, the ways to create one or reset it with an emailed code."""
    policy = await accounts.load_policy(account_ports(ctx.deps), tenant_id)
    return await ctx.page("signin.html", tenant_id=tenant_id, next=next_path, status=status,
                          action=f"/web/{tenant_id}/signin", from_link=from_link,
                          signin=policy.signin, **values)


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
    return await ctx.page("code.html", tenant_id=tenant_id, next=nxt, email=req.address,
                          action=f"/web/{tenant_id}/verify", signin=policy.signin,
                          ttl_minutes=max(1, deps.settings.code_ttl_s // 60))


async def password_form(ctx: Ctx, tenant_id: str, *, email: str, next_path: str, reset: bool,
                        status: int = 200, **values: Any) -> HTMLResponse:
    """One step: the emailed code and the (new) password, the rules said up front."""
    return await ctx.page(
        "register.html", tenant_id=tenant_id, next=next_path, email=email, reset=reset,
        status=status, action=f"/web/{tenant_id}/{'reset' if reset else 'register'}",
        ttl_minutes=max(1, ctx.deps.settings.code_ttl_s // 60), **values)


def _session_cookie(response: Response, deps: DepsDep, new: service.NewSession) -> None:
    max_age = max(1, int((new.expires_at - deps.clock()).total_seconds()))
    response.set_cookie(deps.settings.cookie_name, new.token, max_age=max_age, path="/",
                        secure=True, httponly=True, samesite="strict")


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
        return await ctx.page("code.html", tenant_id=tenant_id, next=nxt, email=email,
                              status=exc.status, error=exc.detail, signin=policy.signin,
                              action=f"/web/{tenant_id}/verify",
                              ttl_minutes=max(1, deps.settings.code_ttl_s // 60))
    if result.session is None:
        return await ctx.page("totp.html", tenant_id=tenant_id, next=nxt,
                              ticket=result.mfa_ticket, action=f"/web/{tenant_id}/totp")
    response = RedirectResponse(nxt, status_code=303)
    _session_cookie(response, deps, result.session)
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
        return await ctx.page("totp.html", tenant_id=tenant_id, next=nxt, ticket=ticket,
                              status=exc.status, error=exc.detail,
                              action=f"/web/{tenant_id}/totp")
    response = RedirectResponse(nxt, status_code=303)
    _session_cookie(response, deps, new)
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
    return await Ctx(request, deps, web).page(
        "problem.html", title="You are signed out",
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
async def brand_css(tenant_id: TenantPath, web: WebDep) -> Response:
    brand = brand_of(await web.queries.tenant(tenant_id))
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
