"""retrieve's JSON API routes, one module per resource; ``ROUTERS`` in the order the app
includes them (the order of the OpenAPI document). The webmail's pages are in ``web/``.

- ``auth``: email a sign-in code, exchange it for a session, log out
- ``messages``: list, read, download an attachment
- ``accounts``: register, sign in with a password, TOTP, reset, who am I
- ``tokens``: the toolbar's device authorization flow and the user's tokens
- ``toolbar``: what the toolbar agent calls (detect a notification, the original, ack)
- ``common``: what they share (patterns, error bodies, the session cookie)
"""

from __future__ import annotations

from fastapi import APIRouter

from secmsg.retrieve.routes import accounts, auth, messages, tokens, toolbar

ROUTERS: tuple[APIRouter, ...] = (
    auth.router, messages.router, accounts.router, tokens.router, toolbar.router)
