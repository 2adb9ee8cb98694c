"""``authorize``: the device flow (RFC 8628 shape) against retrieve, from this side.

1. ``POST /v1/device/authorize`` names the organisation, this client and the scopes; retrieve
   answers a secret ``device_code`` and a short ``user_code``.
2. The person opens ``verification_uri_complete`` in a browser, signs in and chooses Allow
   (the webmail's "Connect a toolbar" page).
3. Meanwhile ``POST /v1/device/token`` every ``interval`` seconds: ``authorization_pending``
   waits, ``slow_down`` adds 5 s (RFC 8628 3.5), ``access_denied`` and ``expired_token`` end
   the flow; network trouble and 5xx are retried until the request expires.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from secmsg.toolbar.config import StoredToken
from secmsg.toolbar.errors import AgentError, RetrieveUnavailable, TokenRefused, UsageError

log = logging.getLogger("secmsg.toolbar")

SLOW_DOWN_STEP_S = 5  # RFC 8628 section 3.5
MAX_WAIT_BETWEEN_TRIES_S = 30.0


class AuthorizeFailed(TokenRefused):
    """The person denied the request, or it expired before anyone approved it (exit 5)."""


@dataclass(frozen=True)
class Target:
    retrieve_url: str
    tenant_id: str


def target_from_link(link: str) -> Target:
    """The server and the organisation from a notification's link
    (``https://<retrieve>/m/<tenant>/<message id>``, also in ``X-Secure-Message-Url``)."""
    parts = urlsplit(link.strip())
    segments = [s for s in parts.path.split("/") if s]
    if (parts.scheme != "https" or not parts.netloc or len(segments) < 3
            or segments[-3] != "m"):
        raise UsageError("--link must be the https://.../m/<organisation>/<id> link of a "
                         "secure-message notification")
    prefix = "/".join(segments[:-3])
    base = f"https://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    return Target(retrieve_url=base, tenant_id=segments[-2])


def default_client_name() -> str:
    return f"secmsg toolbar agent on {socket.gethostname()}"[:100]


def _client(retrieve_url: str, ca_file: str | None) -> httpx.Client:
    if not retrieve_url.startswith("https://"):
        raise UsageError("--retrieve-url must be an https:// URL")
    verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca_file)
                                     if ca_file else True)
    return httpx.Client(base_url=retrieve_url.rstrip("/"), verify=verify, timeout=30.0,
                        headers={"User-Agent": "secmsg-toolbar/1"})


def _body(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def run_flow(*, target: Target, ca_file: str | None, client_name: str, scopes: list[str],
             out: TextIO, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> StoredToken:
    """Ask, show the person what to do, wait for their decision; the token on Allow."""
    with _client(target.retrieve_url, ca_file) as http:
        try:
            r = http.post("/v1/device/authorize", json={
                "tenant_id": target.tenant_id, "client_name": client_name, "scopes": scopes})
        except httpx.HTTPError as exc:
            raise RetrieveUnavailable(f"cannot reach retrieve ({type(exc).__name__}: "
                                      f"{exc})") from None
        if r.status_code != 200:
            detail = _body(r).get("detail") or f"HTTP {r.status_code}"
            if r.status_code >= 500 or r.status_code == 429:
                raise RetrieveUnavailable(f"retrieve could not start the request: {detail}")
            raise UsageError(f"retrieve refused the request: {detail}")
        flow = _body(r)
        device_code = str(flow["device_code"])
        interval = float(flow.get("interval") or 5)
        deadline = clock() + float(flow.get("expires_in") or 600)
        minutes = max(1, round(float(flow.get("expires_in") or 600) / 60))
        out.write(
            "To connect this toolbar to your secure messages, open this page in a browser:\n\n"
            f"    {flow['verification_uri_complete']}\n\n"
            f"Sign in there and check that it shows the code  {flow['user_code']}  then "
            "choose Allow.\n"
            f"(Or open {flow['verification_uri']} and type the code.)\n"
            f"Waiting for your decision; the code is valid for {minutes} minutes. "
            "Ctrl-C stops.\n")
        out.flush()
        while True:
            sleep(interval)
            if clock() > deadline:
                raise AuthorizeFailed("the code expired before it was approved: run authorize "
                                      "again")
            try:
                r = http.post("/v1/device/token", json={"device_code": device_code})
            except httpx.HTTPError as exc:
                log.warning("cannot reach retrieve (%s); still waiting", type(exc).__name__)
                interval = min(interval * 2, MAX_WAIT_BETWEEN_TRIES_S)
                continue
            body = _body(r)
            if r.status_code == 200:
                return _token(body, target)
            error = str(body.get("error", ""))
            if r.status_code == 400 and error == "authorization_pending":
                continue
            if r.status_code == 400 and error == "slow_down":
                interval += SLOW_DOWN_STEP_S
                continue
            if r.status_code == 400 and error == "access_denied":
                raise AuthorizeFailed("the request was denied in the browser; nothing was "
                                      "stored")
            if r.status_code == 400 and error == "expired_token":
                raise AuthorizeFailed("the code expired or was already used: run authorize "
                                      "again")
            if r.status_code >= 500 or r.status_code == 429:
                log.warning("retrieve answered %s; still waiting", r.status_code)
                continue
            raise AgentError(f"unexpected answer from retrieve: HTTP {r.status_code} "
                             f"{body.get('detail', '')}".strip())


def _token(body: dict[str, Any], target: Target) -> StoredToken:
    expires = body.get("expires_at")
    expires_at = datetime.fromisoformat(expires) if isinstance(expires, str) else None
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return StoredToken(access_token=str(body["access_token"]), token_id=str(body["token_id"]),
                       scopes=tuple(str(s) for s in body.get("scopes") or ()),
                       expires_at=expires_at, obtained_at=datetime.now(UTC),
                       retrieve_url=target.retrieve_url, tenant_id=target.tenant_id)
