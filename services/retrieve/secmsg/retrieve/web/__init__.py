"""The Secure Message Center (webmail): pages, CSRF, HTML sanitising; see docs/webmail.md."""

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from secmsg.retrieve.web import account_pages
from secmsg.retrieve.web.context import STATIC_DIR
from secmsg.retrieve.web.routes import fallback, router

router.include_router(account_pages.router)


def install(app: FastAPI) -> None:
    """The pages, the stylesheet, then the webmail's own 404 page for every other /web/ and
    /m/ address (last, so it shadows nothing)."""
    app.include_router(router)
    app.mount("/web/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(fallback)


__all__ = ["STATIC_DIR", "install", "router"]
