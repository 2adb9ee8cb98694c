"""The tenant admin API (the 'admin' scope): notification templates (kinds, sources, preview)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from secmsg.ingest import audit, tenant_templates
from secmsg.ingest.routes.common import AUTH_ERRORS, Admin, DepsDep, err, origin
from secmsg.shared import templating
from secmsg.shared.errors import InvalidInput, PayloadTooLarge

router = APIRouter(prefix="/v1/admin", tags=["admin"])

# JSON may escape each character of the source as \uXXXX (6 bytes), plus the framing.
_MAX_BODY = 6 * templating.LIMITS.max_source_bytes + 1024


class TemplateSource(BaseModel):
    source: str = Field(description="Jinja2 template source (sandboxed, at most "
                                    f"{templating.LIMITS.max_source_bytes} bytes)",
                        examples=["{{ sender }} sent you a secure message: {{ link }}\n"])


class Template(BaseModel):
    kind: str = Field(examples=["notification_text"])
    source: str
    is_default: bool = Field(description="true: the shipped default (nothing stored)")
    version: int | None = Field(description="increases with every save; null for the default")
    updated_at: datetime | None


class TemplateLimits(BaseModel):
    max_source_bytes: int
    max_output_bytes: int
    render_timeout_s: float


class Templates(BaseModel):
    templates: list[Template]
    variables: dict[str, str] = Field(description="what a notification template may use")
    filters: list[str] = Field(description="the filters a template may use")
    limits: TemplateLimits


class Preview(BaseModel):
    kind: str
    output: str = Field(description="the template rendered with a sample message and the "
                                    "tenant's own name, footer and disclaimers")


_SOURCE_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    400: err("the template does not compile, uses something not allowed (unknown variable, "
              "private attribute, filter, call), lacks {{ link }}, fails or runs too long on "
              "the sample; `detail` names the problem"),
    404: err("unknown template kind"),
    413: err("the source or its rendered sample is over the size limit"),
}
_SOURCE_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": TemplateSource.model_json_schema()}}}}

Kind = Annotated[str, Path(description="notification_text | notification_html",
                           examples=["notification_html"])]


async def _source(request: Request) -> str:
    """The body, read with a cap before parsing (a huge body is refused, not buffered)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                raise PayloadTooLarge(f"the request body is larger than {_MAX_BODY} bytes")
    except ClientDisconnect:
        raise InvalidInput("the client disconnected before the body was complete") from None
    try:
        return TemplateSource.model_validate_json(bytes(body)).source
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        what = errors[0]["msg"] if errors else "invalid"
        raise InvalidInput(f"expected JSON {{\"source\": \"...\"}}: {where or 'body'}: "
                           f"{what}") from None


def _model(view: tenant_templates.TemplateView) -> Template:
    return Template(kind=view.kind, source=view.source, is_default=view.is_default,
                    version=view.version, updated_at=view.updated_at)


@router.get("/templates", response_model=Templates, responses=AUTH_ERRORS,
            summary="The tenant's notification templates (stored or default)")
async def get_templates(creds: Admin, deps: DepsDep) -> Templates:
    views = await tenant_templates.list_templates(tenant_id=creds.tenant.tenant_id,
                                                  store=deps.templates)
    limits = templating.LIMITS
    return Templates(
        templates=[_model(v) for v in views],
        variables=dict(templating.KINDS["notification_text"].variables),
        filters=sorted(templating.ALLOWED_FILTERS),
        limits=TemplateLimits(max_source_bytes=limits.max_source_bytes,
                              max_output_bytes=limits.max_output_bytes,
                              render_timeout_s=limits.render_timeout_s))


@router.put("/templates/{kind}", response_model=Template, responses=_SOURCE_ERRORS,
            openapi_extra=_SOURCE_BODY, summary="Replace a template (validated first)",
            description="Compiled in the sandbox and rendered with a sample message within the "
                        "limits; refused with a `detail` naming the problem, in which case the "
                        "stored version keeps serving. Templates shape only the body: subject, "
                        "recipients and the toolbar markers are added by the platform.")
async def put_template(kind: Kind, request: Request, creds: Admin,
                       deps: DepsDep) -> Template:
    source = await _source(request)
    view = await tenant_templates.save(tenant_id=creds.tenant.tenant_id, kind=kind,
                                       source=source, key_id=creds.actor,
                                       store=deps.templates, now=datetime.now(UTC))
    await audit.record(events=deps.events, creds=creds, action="template.changed",
                       origin=origin(request), detail={"kind": kind, "change": "saved"})
    return _model(view)


@router.delete("/templates/{kind}", response_model=Template,
               responses={**AUTH_ERRORS, 404: err("unknown template kind")},
               summary="Go back to the default template")
async def delete_template(kind: Kind, request: Request, creds: Admin,
                          deps: DepsDep) -> Template:
    view = await tenant_templates.reset(tenant_id=creds.tenant.tenant_id, kind=kind,
                                        store=deps.templates)
    await audit.record(events=deps.events, creds=creds, action="template.changed",
                       origin=origin(request), detail={"kind": kind, "change": "reset"})
    return _model(view)


@router.post("/templates/{kind}/preview", response_model=Preview, responses=_SOURCE_ERRORS,
             openapi_extra=_SOURCE_BODY, summary="Render a source with a sample (nothing saved)")
async def preview_template(kind: Kind, request: Request, creds: Admin,
                           deps: DepsDep) -> Preview:
    source = await _source(request)
    output = await tenant_templates.preview(tenant_id=creds.tenant.tenant_id, kind=kind,
                                            source=source, store=deps.templates)
    return Preview(kind=kind, output=output)
