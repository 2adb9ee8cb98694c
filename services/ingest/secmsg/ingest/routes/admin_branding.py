"""Admin routes for the tenant's look: display name, footer, disclaimers, logo, colour."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from secmsg.ingest import branding
from secmsg.ingest.routes.common import AUTH_ERRORS, Admin, DepsDep, err, origin, partial_body

router = APIRouter(prefix="/v1/admin", tags=["admin: branding"])


class BrandingOut(BaseModel):
    display_name: str
    footer: str | None
    disclaimers: list[str]
    logo_url: str | None
    primary_color: str | None


@router.get("/branding", response_model=BrandingOut, responses=AUTH_ERRORS,
            summary="The tenant's name, footer, disclaimers, logo and colour")
async def get_branding(creds: Admin, deps: DepsDep) -> BrandingOut:
    return BrandingOut(**branding.view(await deps.access.tenant(creds.tenant.tenant_id)))


_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": branding.BrandingIn.model_json_schema(),
    "example": {"display_name": "ABC Medical",
                "footer": "Sent by ABC Medical of 123 ABC Street Beverly Hills, CA 90210, "
                          "Call: (555) 555-7323",
                "disclaimers": ["This message is confidential."],
                "logo_url": "https://www.abc-medical.example/logo.png",
                "primary_color": "#0b5394"}}}}}


@router.put("/branding", response_model=BrandingOut, openapi_extra=_BODY,
            responses={**AUTH_ERRORS, 400: err(
                "a display name with CR/LF, a logo that is not https: or a small data:image, "
                "a colour that is not #rrggbb, an empty disclaimer, or nothing to change")},
            summary="Change the tenant's look (fields left out stay; null clears)",
            description="Used by every notification, code email and webmail page. The "
                        "notification subject and recipients stay the sender's; this only "
                        "shapes what the templates show.")
async def put_branding(creds: Admin, deps: DepsDep, request: Request) -> BrandingOut:
    body, raw = await partial_body(request, branding.BrandingIn)
    return BrandingOut(**await branding.put(creds=creds, body=body, raw=raw, repo=deps.access,
                                            events=deps.events, origin=origin(request)))
