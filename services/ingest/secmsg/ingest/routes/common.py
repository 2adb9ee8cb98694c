"""What the sender and admin routes share: the error bodies for OpenAPI and the callers."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ValidationError

from secmsg.ingest.auth import authenticate, bearer
from secmsg.ingest.ports import SCOPE_ADMIN, SCOPE_SEND, Credentials, Origin
from secmsg.ingest.wiring import Deps, get_deps
from secmsg.shared.errors import InvalidInput
from secmsg.shared.http_errors import ErrorBody

M = TypeVar("M", bound=BaseModel)


def origin(request: Request) -> Origin:
    """Who called, for the audit log (the user agent cut to 256 characters)."""
    return Origin(client_ip=request.client.host if request.client else None,
                  user_agent=(request.headers.get("user-agent") or "")[:256] or None)


def err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: err("missing, unknown, expired or revoked API key or token"),
    403: err("the credentials lack the 'admin' scope, or the token's user is not a tenant "
             "admin"),
    503: err("database or event bus unavailable; retry later"),
}
SENDER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: err("missing, unknown, expired or revoked API key or token"),
    403: err("the credentials have neither the 'send' nor the 'admin' scope"),
    404: err("no such message, another tenant's, or not one this caller sent"),
    503: err("database or event bus unavailable; retry later"),
}


async def _admin(deps: Annotated[Deps, Depends(get_deps)],
                 auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                 ) -> Credentials:
    return await authenticate(deps.tenants, auth, scope=SCOPE_ADMIN)


async def _sender(deps: Annotated[Deps, Depends(get_deps)],
                  auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> Credentials:
    return await authenticate(deps.tenants, auth, scope=(SCOPE_SEND, SCOPE_ADMIN))


Admin = Annotated[Credentials, Depends(_admin)]
Sender = Annotated[Credentials, Depends(_sender)]
DepsDep = Annotated[Deps, Depends(get_deps)]


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema for an ``openapi_extra`` request body, nested models inlined:
    a ``$ref`` to the schema's own ``$defs`` would point into the OpenAPI document's root."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline({**defs[ref.removeprefix("#/$defs/")],
                               **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return dict(inline(schema))


async def partial_body(request: Request, model: type[M]) -> tuple[M, dict[str, Any]]:
    """A PUT body where a field left out stays as it is and an explicit null clears it: the
    validated model, and the JSON object as sent (to tell the two apart)."""
    try:
        raw = json.loads(await request.body() or b"null")
        if not isinstance(raw, dict):
            raise InvalidInput("expected a JSON object")
        return model.model_validate(raw), raw
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise InvalidInput(f"{where}: {first.get('msg')}") from None
        raise InvalidInput("the body is not valid JSON") from None
