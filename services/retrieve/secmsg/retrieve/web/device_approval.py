"""Toolbar approval: the device flow's ``verification_uri``. A person signs in, sees which
toolbar asks for access, and allows or denies it; the decision is ``device.decide``."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import device
from secmsg.retrieve.deps import ClientIpDep
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import CtxDep, SignedInFormDep
from secmsg.shared.errors import NotFound, SecmsgError

router = page_router()
DEVICE_LOOKUPS = 20  # signed-out code look-ups per client address per window
DEVICE_LOOKUP_WINDOW_S = 900


@router.get("/device")
async def device_uri(user_code: Annotated[str, Query(max_length=32)] = "") -> Response:
    """``verification_uri`` of the device flow: the page lives with the webmail."""
    query = f"?user_code={quote(user_code)}" if user_code else ""
    return RedirectResponse(f"/web/device{query}", status_code=303)


@router.get("/web/device", response_class=HTMLResponse)
async def device_page(ctx: CtxDep, ip: ClientIpDep,
                      user_code: Annotated[str, Query(max_length=32)] = "") -> Response:
    deps = ctx.deps
    session = await ctx.load_session()
    code = user_code.strip().upper()
    if session is None:
        if not code:
            return await ctx.page("device.html", user_code="")
        # Looked up before sign-in (it names the organisation only): limited per address so
        # nobody can sweep the code space for live requests.
        retry = await deps.limiter.hit(key=f"device-lookup:ip:{ip}", limit=DEVICE_LOOKUPS,
                                       window_s=DEVICE_LOOKUP_WINDOW_S, now=deps.clock())
        if retry is not None:
            return await ctx.page("device.html", status=429, user_code=code,
                                  error="too many codes tried; wait a few minutes")
        # The request says which organisation to sign in to; then back here.
        try:
            record = await deps.devices.by_user_code(device.normalize_user_code(code))
        except NotFound:
            record = None
        if record is None or record.status != "pending" or record.expires_at <= deps.clock():
            return await ctx.page("device.html", status=404, user_code=code,
                                  error="no pending request has this code")
        here = f"/web/device?user_code={quote(record.user_code)}"
        return RedirectResponse(f"/web/{record.tenant_id}/signin?next={quote(here, safe='/')}",
                                status_code=303)
    if not code:
        return await ctx.page("device.html", user_code="")
    try:
        record = await device.pending(devices=deps.devices, session=session, user_code=code,
                                      now=deps.clock())
    except NotFound as exc:
        return await ctx.page("device.html", status=404, user_code=code, error=exc.detail)
    return await ctx.page("device.html", user_code=record.user_code, request_=record)


@router.post("/web/device", response_class=HTMLResponse)
async def device_decide(ctx: CtxDep, session: SignedInFormDep,
                        user_code: Annotated[str, Form(max_length=32)] = "",
                        decision: Annotated[str, Form(max_length=16)] = "") -> Response:
    deps = ctx.deps
    if decision not in ("approve", "deny"):
        return await ctx.page("device.html", status=400, user_code=user_code,
                              error="choose Allow or Deny")
    try:
        record = await device.decide(devices=deps.devices, markers=deps.markers,
                                     accounts=deps.accounts, limiter=deps.limiter,
                                     settings=deps.settings, session=session,
                                     user_code=user_code, approve=decision == "approve",
                                     now=deps.clock())
    except SecmsgError as exc:
        return await ctx.page("device.html", status=exc.status, user_code=user_code,
                              error=exc.detail)
    return await ctx.page("device.html", decided=decision, request_=record, user_code="")
