"""The retrieve side of the agent: the toolbar API over HTTPS with a bearer token."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from typing import IO

import httpx

from secmsg.toolbar.errors import FetchFailed, RetrieveUnavailable, TokenRefused, UsageError

SPOOL_BYTES = 8 * 1024 * 1024  # larger originals go to a temp file while downloading


@dataclass(frozen=True)
class Fetched:
    status: str  # "ok" | "unavailable" | "revoked" | "recalled"
    body: IO[bytes] | None = None


class Retrieve:
    def __init__(self, *, base_url: str, token: str, ca_file: str | None,
                 timeout: float = 60.0):
        if not base_url.startswith("https://"):
            raise UsageError("--retrieve-url must be an https:// URL")
        verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca_file)
                                         if ca_file else True)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), verify=verify,
                                  timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}",
                                           "User-Agent": "secmsg-toolbar/1"})

    def _check(self, r: httpx.Response) -> None:
        if r.status_code in (401, 403):
            raise TokenRefused("retrieve refused the token (unknown, revoked, expired or "
                               "without the read scope): get a new one with the device flow")
        if r.status_code >= 500:
            raise RetrieveUnavailable(f"retrieve answered {r.status_code}")

    def _send(self, method: str, path: str, **kw: object) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise RetrieveUnavailable(f"cannot reach retrieve ({type(exc).__name__}: "
                                      f"{exc})") from None
        self._check(r)
        return r

    def check_token(self) -> None:
        """Fail fast (before touching the mailbox) if the token is no good."""
        r = self._send("GET", "/v1/messages", params={"limit": 1})
        if r.status_code != 200:
            raise RetrieveUnavailable(f"retrieve answered {r.status_code} to a token check")

    def fetch(self, message_id: str) -> Fetched:
        path = f"/v1/toolbar/messages/{message_id}/original"
        try:
            with self._http.stream("GET", path) as r:
                self._check(r)
                if r.status_code == 404:
                    return Fetched("unavailable")
                if r.status_code == 410:
                    r.read()
                    error = _error_code(r)
                    return Fetched(error if error in ("revoked", "recalled") else "revoked")
                if r.status_code != 200:
                    raise RetrieveUnavailable(f"retrieve answered {r.status_code}")
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
                try:
                    for chunk in r.iter_bytes():
                        spool.write(chunk)
                except httpx.HTTPError:
                    # One message's download broke off (e.g. revoked mid-stream): that
                    # message fails, the run goes on.
                    spool.close()
                    raise FetchFailed(f"the download of {message_id} broke off") from None
        except httpx.HTTPError as exc:
            raise RetrieveUnavailable(f"cannot reach retrieve ({type(exc).__name__}: "
                                      f"{exc})") from None
        spool.seek(0)
        return Fetched("ok", spool)

    def ack(self, message_id: str) -> bool:
        r = self._send("POST", f"/v1/toolbar/messages/{message_id}/ack")
        return r.status_code == 200

    def close(self) -> None:
        self._http.close()


def _error_code(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", ""))
    except ValueError:
        return ""
