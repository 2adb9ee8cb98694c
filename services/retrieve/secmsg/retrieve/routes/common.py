"""What retrieve's API routes share: id patterns, error bodies for OpenAPI, the session cookie,
the sign-in request base model, log correlation and the primed download stream."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field

from secmsg.retrieve.deps import DepsDep
from secmsg.retrieve.service import NewSession
from secmsg.shared import logs
from secmsg.shared.http_errors import ErrorBody
from secmsg.shared.ids import MESSAGE_ID_PATTERN
from secmsg.shared.subjects import TENANT_ID_RE

TENANT_PATTERN = TENANT_ID_RE.pattern
ID_PATTERN = MESSAGE_ID_PATTERN
EXAMPLE_ID = "3f2a9c1e5b7d4e8fa0b1c2d3e4f50617"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Invalid input, e.g. an address that is not an email address",
            401: "Not signed in, or the session expired",
            404: "Not there, or not yours (the two are indistinguishable)",
            416: "Range outside the content", 422: "Request validation failed",
            429: "Rate limited; see Retry-After",
            503: "A dependency (database, object store, event bus) is unavailable"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


class CodeIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"tenant_id": "abc-medical", "email": "pat@example.org"}]})
    tenant_id: str = Field(pattern=TENANT_PATTERN, description="The tenant that sent the message")
    email: str = Field(min_length=3, max_length=320, description="The recipient's address")


class SessionOut(BaseModel):
    token: str = Field(description="Bearer token (also set as an HttpOnly cookie)")
    expires_at: datetime = Field(description="Absolute expiry; idle sessions end sooner")


def correlate(message_id: str, tenant_id: str) -> None:
    # Each request runs in its own task, so these stay with this request's log lines.
    # Only a well-formed id: the path is the client's text, and logs must not carry it.
    if re.fullmatch(ID_PATTERN, message_id):
        logs.correlation_id.set(message_id)
    logs.tenant_id.set(tenant_id)


def set_cookie(response: Response, deps: DepsDep, new: NewSession) -> None:
    response.set_cookie(deps.settings.cookie_name, new.token,
                        max_age=deps.settings.session_max_s, path="/", secure=True,
                        httponly=True, samesite="strict")


async def primed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first`` (already read, to choose the status line) then the rest of ``rest``."""
    if first:
        yield first
    async for chunk in rest:
        yield chunk
