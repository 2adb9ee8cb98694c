"""The tenant's stylesheet: its brand colour as a CSS variable (no inline style anywhere: the
page CSP is ``style-src 'self'``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from fastapi.responses import Response

from secmsg.retrieve.web.context import brand_of
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import CtxDep, TenantPath, hint_matches

router = page_router()


@router.get("/web/brand/{tenant_id}.css")
async def brand_css(tenant_id: TenantPath, ctx: CtxDep,
                    m: Annotated[str, Query(max_length=32)] = "",
                    r: Annotated[str, Query(max_length=64)] = "") -> Response:
    # The colour only to someone signed in to the tenant or holding the genuine link of one
    # of its messages (``m`` and its hint ``r``): an empty answer for everyone else, so it
    # tells nothing about whether the tenant exists.
    session = await ctx.load_session()
    allowed = (session is not None and session.tenant_id == tenant_id) or (
        await hint_matches(ctx, tenant_id, m, r) is not None)
    brand = brand_of(await ctx.web.queries.tenant(tenant_id) if allowed else None)
    css = f":root {{ --brand: {brand['color']}; }}\n" if brand["color"] else ""
    return Response(css, media_type="text/css",
                    headers={"Cache-Control": "private, max-age=300"})
