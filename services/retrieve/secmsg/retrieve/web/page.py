"""What every webmail page shares: one request's view (``Ctx``), rendering with the tenant's
brand and the security headers, and the dependencies a page declares instead of checking by
hand: ``CtxDep`` (the request's view, session not loaded), ``SignedInDep`` (the browser
session, or a redirect to sign in), ``SignedInFormDep`` (that, and the form's CSRF token) and
``CsrfDep`` (a signed-out form's CSRF token).

A dependency cannot answer with a page itself; it raises ``PageAnswer`` and ``PageRoute``
(web/errors.py) turns it into the response it carries.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import service
from secmsg.retrieve.deps import DepsDep
from secmsg.retrieve.ports import SessionRecord
from secmsg.retrieve.web import csrf
from secmsg.retrieve.web.context import WebDep, brand_of
from secmsg.shared.errors import Unauthorized
from secmsg.shared.ids import MESSAGE_ID_PATTERN
from secmsg.shared.subjects import TENANT_ID_RE

ID = MESSAGE_ID_PATTERN
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
# The pages that run static/passkey.js (sign-in, passkeys): scripts and fetches from here only.
CSP_PASSKEY = CSP + "; script-src 'self'; connect-src 'self'"
# Only for a message whose sender's images the user chose to load.
CSP_REMOTE_IMAGES = CSP.replace("img-src 'self' data:", "img-src 'self' data: https:")
CsrfField = Annotated[str, Form(alias="csrf", max_length=128)]


class PageAnswer(Exception):
    """Raised by a page dependency: answer with this response instead of calling the page."""

    def __init__(self, respond: Callable[[], Awaitable[Response]]):
        super().__init__("page answered by a dependency")
        self.respond = respond


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
        tenant = remembered_tenant(self.request)
        back = ("/web/inbox", "Back to your inbox") if self.session else (
            (f"/web/{tenant}/signin", "Sign in") if tenant else None)
        response = await self.page("problem.html", status=status, title=title, text=text,
                                   back=back)
        response.headers.update(headers or {})
        return response


def safe_next(value: str | None) -> str:
    return value if value and _NEXT_RE.match(value) and "//" not in value else "/web/inbox"


def remembered_tenant(request: Request) -> str | None:
    value = request.cookies.get(TENANT_COOKIE) or ""
    return value if TENANT_ID_RE.fullmatch(value) else None


async def hint_matches(ctx: Ctx, tenant_id: str, message_id: str, hint: str) -> str | None:
    """The recipient a notification link's keyed hint (``?r=``) names, else None. Only the
    genuine link of a real message has one, so it shows nothing to someone probing ids."""
    if not hint or not re.fullmatch(ID, message_id):
        return None
    return ctx.deps.keyring.match_recipient_hint(
        tenant_id, message_id, hint, await ctx.web.queries.recipients(tenant_id, message_id))


# --- dependencies ----------------------------------------------------------------------------

def get_ctx(request: Request, deps: DepsDep, web: WebDep) -> Ctx:
    """The request's view; one per request (FastAPI caches a dependency within a request, so
    the page and the dependencies below share it). The session is not loaded here."""
    return Ctx(request, deps, web)


CtxDep = Annotated[Ctx, Depends(get_ctx)]


async def signed_in(ctx: CtxDep) -> SessionRecord:
    """The browser session. Signed out: to this browser's sign-in page, then back here;
    without a remembered tenant (a new browser), the page saying to open the notification
    link again."""
    session = await ctx.load_session()
    if session is not None:
        return session
    request = ctx.request
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    nxt = safe_next(here if request.method == "GET" else None)
    tenant = remembered_tenant(request)
    target = f"/web/{tenant}/signin?next={quote(nxt, safe='/')}" if tenant else \
        "/web/signed-out"

    async def redirect() -> Response:
        return RedirectResponse(target, status_code=303)

    raise PageAnswer(redirect)


SignedInDep = Annotated[SessionRecord, Depends(signed_in)]


async def csrf_checked(ctx: CtxDep, csrf_token: CsrfField = "") -> None:
    """A signed-out form (the sign-in steps): its CSRF field is valid for this browser; else
    the expired-form page."""
    if not ctx.csrf_ok(csrf_token):
        raise PageAnswer(ctx.csrf_refused)


CsrfDep = Annotated[None, Depends(csrf_checked)]


async def signed_in_form(ctx: CtxDep, session: SignedInDep,
                         csrf_token: CsrfField = "") -> SessionRecord:
    """A signed-in form: the session (else sign in), then its CSRF field, bound to that
    session (else the expired-form page). Not for multipart forms the page reads itself
    (``/web/send``)."""
    if not ctx.csrf_ok(csrf_token):
        raise PageAnswer(ctx.csrf_refused)
    return session


SignedInFormDep = Annotated[SessionRecord, Depends(signed_in_form)]
