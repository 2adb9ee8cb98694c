"""The error body of the HTTP services (ingest, retrieve), and how their OpenAPI documents say it.

Every refusal is ``{"error": <code>, "detail": <one sentence>}`` -- a domain error (see
``errors``), an unknown route, and a request that does not match the documented parameters or
body alike. FastAPI documents that last case (422) as its own ``HTTPValidationError``, whose
``detail`` is a list; the services answer a sentence instead, so ``document_errors`` rewrites
the generated document to say what the server does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

ERROR_SCHEMA = "ErrorBody"
VALIDATION_DESCRIPTION = (
    "The parameters or body do not match this document: a field missing, of the wrong type "
    "or out of range, or a body that is not JSON. `detail` names the first such field.")
# What FastAPI raises (as a 400 HTTPException) when a JSON body cannot be decoded at all,
# e.g. bytes that are not UTF-8. The same class of error as invalid JSON: answered as 422.
BODY_PARSE_ERROR = "There was an error parsing the body"


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. invalid_input, not_found, "
                                   "unauthorized, too_many_requests",
                       examples=["invalid_input"])
    detail: str = Field(description="what went wrong, in one sentence",
                        examples=["body.to: Field required"])


def error_body(code: str, detail: str) -> dict[str, str]:
    return ErrorBody(error=code, detail=detail).model_dump()


def validation_detail(errors: Sequence[Mapping[str, Any]]) -> str:
    """One sentence for a request that failed validation: the first field and its problem."""
    if not errors:
        return "the request does not match the API description"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return f"{loc[0] if loc else 'body'}: not valid JSON"
    where = ".".join(loc) or "request"
    return f"{where}: {first.get('msg', 'invalid')}"


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Point every 422 at ``ErrorBody`` (in place) and drop FastAPI's validation schemas."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            answer = responses.get("422")
            if answer is None:
                continue
            content = answer.get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                responses["422"] = {"description": VALIDATION_DESCRIPTION,
                                    "content": {"application/json": {"schema": ref}}}
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return openapi


def use_error_schema(app: Any) -> None:
    """Make a FastAPI app's ``/openapi.json`` describe its 422 answers as ``ErrorBody``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        schema: dict[str, Any] = app.openapi_schema
        return schema

    app.openapi = openapi
