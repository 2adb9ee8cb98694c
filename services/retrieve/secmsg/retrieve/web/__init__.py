"""The Secure Message Center (webmail): pages, CSRF, HTML sanitising; see docs/webmail.md."""

from secmsg.retrieve.web import account_pages
from secmsg.retrieve.web.context import STATIC_DIR
from secmsg.retrieve.web.routes import router

router.include_router(account_pages.router)

__all__ = ["STATIC_DIR", "router"]
