"""The Secure Message Center (webmail): pages, CSRF, HTML sanitising; see docs/webmail.md."""

from secmsg.retrieve.web.context import STATIC_DIR
from secmsg.retrieve.web.routes import router

__all__ = ["STATIC_DIR", "router"]
