"""The Secure Message Center (webmail): server-rendered pages over ``secmsg.retrieve.service``;
see docs/webmail.md.

One module per page family, each with its own ``router``: ``signin`` (notification link, codes,
password, authenticator step, register/reset, sign out), ``messages`` (inbox, message view,
outside links), ``compose`` (new, reply, send), ``sent`` (sent list, delivery slip),
``account`` (account page, authenticator, connected apps), ``passkey_pages`` (passkeys: add,
list, remove, sign in), ``device_approval`` (toolbar approval) and ``brand`` (the tenant
stylesheet). What they share is in ``page`` (``Ctx`` and the ``SignedInDep``/
``SignedInFormDep``/``CsrfDep`` dependencies) and ``errors`` (the error pages, ``PageRoute``,
the 404 fallback). No page needs JavaScript, except for passkeys, which cannot work without it
(``static/passkey.js``); every form posts back here (CSP ``form-action 'self'``).
"""

from fastapi import APIRouter, FastAPI
from starlette.staticfiles import StaticFiles

from secmsg.retrieve.web import (
    account,
    brand,
    compose,
    device_approval,
    messages,
    passkey_pages,
    sent,
    signin,
)
from secmsg.retrieve.web.context import STATIC_DIR, lifespan
from secmsg.retrieve.web.errors import fallback

FAMILIES = (signin, passkey_pages, messages, compose, sent, account, device_approval, brand)
router = APIRouter(include_in_schema=False, lifespan=lifespan)
for _family in FAMILIES:
    router.include_router(_family.router)


def install(app: FastAPI) -> None:
    """The pages, the stylesheet, then the webmail's own 404 page for every other /web/ and
    /m/ address (last, so it shadows nothing)."""
    app.include_router(router)
    app.mount("/web/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(fallback)


__all__ = ["STATIC_DIR", "install", "router"]
