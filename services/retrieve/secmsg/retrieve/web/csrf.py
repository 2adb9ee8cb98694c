"""CSRF protection for every webmail form: an HMAC-bound double-submit token.

A random value lives in a cookie only this origin can set (``__Host-`` prefix: Secure, path /,
no Domain); each form carries HMAC(key, cookie value | session token). A cross-site form can
neither read the cookie nor compute the HMAC, and the token dies with the session it was bound
to (signing out or in yields a different token). The session cookie's SameSite=Strict is a
second line, not the only one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

COOKIE = "__Host-secmsg_csrf"
FIELD = "csrf"


def _mac(key: bytes, seed: str, session: str | None) -> str:
    return hmac.new(key, f"{seed}|{session or ''}".encode(), hashlib.sha256).hexdigest()


def issue(request: Request, key: bytes, session: str | None) -> tuple[str, str | None]:
    """(token for the form, new cookie value to set or None when the cookie is kept)."""
    seed = request.cookies.get(COOKIE)
    fresh = None
    if not seed or len(seed) < 32 or len(seed) > 64:
        seed = fresh = secrets.token_urlsafe(32)
    return _mac(key, seed, session), fresh


def set_cookie(response: Response, value: str | None) -> None:
    if value:
        # Lax, not Strict: the notification link arrives from another site (the mail client)
        # and must not replace the seed other open tabs' forms are bound to.
        response.set_cookie(COOKIE, value, path="/", secure=True, httponly=True,
                            samesite="lax")


def valid(request: Request, key: bytes, session: str | None, token: object) -> bool:
    seed = request.cookies.get(COOKIE)
    if not seed or not isinstance(token, str) or len(token) != 64:
        return False
    return hmac.compare_digest(_mac(key, seed, session), token)
