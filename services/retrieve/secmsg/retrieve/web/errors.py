"""The webmail's own error pages: every refused path, query or form field, every domain error no
page explained, and every address no page answers is an HTML page with a way back (same
status), never the API's JSON. ``PageRoute`` is the route class of every webmail router."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from secmsg.retrieve import service
from secmsg.retrieve.web.context import WebContext
from secmsg.retrieve.web.page import Ctx, PageAnswer
from secmsg.shared.errors import SecmsgError
from secmsg.shared.subjects import TENANT_ID_RE


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
    """A webmail route: a dependency's answer (``PageAnswer``: sign in first, expired form) is
    sent as is; a refused path, query or form field, or a domain error no handler explained,
    is the webmail's own error page (HTML, same status), never the API's JSON."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except PageAnswer as answer:
                return await answer.respond()
            except (RequestValidationError, StarletteHTTPException, SecmsgError) as exc:
                return await error_page(request, exc)

        return page_handler


def page_router() -> APIRouter:
    """A router for one family of webmail pages."""
    return APIRouter(include_in_schema=False, route_class=PageRoute)


# --- what no page answers (installed after the static files) ---------------------------------

fallback = page_router()
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
