"""Store's HTTP surface on its internal port: health, metrics, and the platform operator's
dead-letter endpoints.

The dead-letter endpoints are for the platform operator, not a tenant: they see every
tenant's failed events. They answer only with ``Authorization: Bearer
<SECMSG_STORE_ADMIN_TOKEN>``; with no token configured they do not exist (404). The port is
cluster-internal (no Ingress; the NetworkPolicy admits the monitoring namespace and the
operator's port-forward). FastStream's ASGI routes match exact paths, so the letter's id is a
query parameter:

    GET  /admin/dead-letters?service=&state=open|replayed|discarded|all&limit=100&after=
         -> {"dead_letters": [...], "next": <id or null>}: newest first (stream order), one
         ``_id`` range a read; ``after=<next>`` is the page after (a page may hold fewer
         than ``limit`` when a filter skips many letters; ``next`` null is the end)
    GET  /admin/dead-letter?id=<id>
    POST /admin/dead-letter/replay?id=<id>[&force=true]
    POST /admin/dead-letter/discard?id=<id>[&note=...]

Answers are JSON; refusals are ``{"error": <code>, "detail": <sentence>}`` with 400 (bad
query), 401 (no or wrong token), 404 (unknown id), 409 (replayed or discarded already),
503 (MongoDB or NATS unavailable).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from faststream.asgi import AsgiResponse, get, post
from pydantic import SecretStr

from secmsg.shared.errors import DependencyUnavailable, InvalidInput, SecmsgError, Unauthorized
from secmsg.store import deadletters
from secmsg.store.ports import DeadLetterRepo, RawPublisher

log = logging.getLogger(__name__)
JSON = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def respond(status: int, body: Any) -> AsgiResponse:
    return AsgiResponse(json.dumps(body).encode(), status, JSON)


def _query(scope: Any) -> dict[str, str]:
    raw = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    for key, values in raw.items():
        if len(values) > 1:
            raise InvalidInput(f"{key}: give it once")
    return {k: v[0] for k, v in raw.items()}


def _authorized(scope: Any, token: SecretStr) -> None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in scope.get("headers", [])}
    given = headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized("a platform operator token is required (Authorization: Bearer)")


def _int(q: dict[str, str], key: str, default: int) -> int:
    try:
        return int(q.get(key, default))
    except ValueError:
        raise InvalidInput(f"{key} must be a whole number") from None


def _flag(q: dict[str, str], key: str) -> bool:
    value = q.get(key, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise InvalidInput(f"{key} must be true or false")
    return value in ("true", "1")


def admin_routes(token: SecretStr | None, repo: Callable[[], DeadLetterRepo],
                 publisher: Callable[[], RawPublisher]) -> list[tuple[str, Any]]:
    """The dead-letter endpoints; none when no operator token is configured."""
    if token is None or not token.get_secret_value():
        return []

    def guarded(job: Callable[[Any, dict[str, str]], Awaitable[tuple[int, Any]]]
                ) -> Callable[[Any], Awaitable[AsgiResponse]]:
        async def handler(scope: Any) -> AsgiResponse:
            try:
                _authorized(scope, token)
                status, body = await job(scope, _query(scope))
            except DependencyUnavailable as exc:
                return respond(503, {"error": exc.code, "detail": exc.detail})
            except SecmsgError as exc:
                return respond(exc.status, {"error": exc.code, "detail": exc.detail})
            except Exception as exc:  # NATS refusing the replay publish, mostly
                log.exception("dead-letter admin request failed")
                return respond(503, {"error": "dependency_unavailable",
                                     "detail": f"could not complete ({type(exc).__name__})"})
            return respond(status, body)

        return handler

    async def list_(scope: Any, q: dict[str, str]) -> tuple[int, Any]:
        state = q.get("state", "open")
        rows, nxt = await deadletters.list_letters(
            repo=repo(), service=q.get("service") or None,
            state=None if state == "all" else state, limit=_int(q, "limit", 100),
            after=q.get("after") or None)
        return 200, {"dead_letters": rows, "next": nxt}

    async def one(scope: Any, q: dict[str, str]) -> tuple[int, Any]:
        return 200, await deadletters.show(repo=repo(), letter_id=q.get("id", ""))

    async def replay(scope: Any, q: dict[str, str]) -> tuple[int, Any]:
        return 200, await deadletters.replay(repo=repo(), publish=publisher(),
                                             letter_id=q.get("id", ""), by="admin-api",
                                             force=_flag(q, "force"))

    async def discard(scope: Any, q: dict[str, str]) -> tuple[int, Any]:
        return 200, await deadletters.discard(repo=repo(), letter_id=q.get("id", ""),
                                              by="admin-api", note=q.get("note"))

    return [("/admin/dead-letters", get(guarded(list_), include_in_schema=False)),
            ("/admin/dead-letter", get(guarded(one), include_in_schema=False)),
            ("/admin/dead-letter/replay", post(guarded(replay), include_in_schema=False)),
            ("/admin/dead-letter/discard", post(guarded(discard), include_in_schema=False))]
