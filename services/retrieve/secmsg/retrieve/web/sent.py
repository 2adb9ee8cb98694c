"""What I sent: the list, and each message's delivery slip (from ingest's
``GET /v1/messages/{id}/slip``, read with a send token minted for this browser session)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import HTMLResponse, Response

from secmsg.retrieve import tokens
from secmsg.retrieve.deps import ClientIpDep, UserAgentDep
from secmsg.retrieve.web import ingest as ingest_api
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.filters import when
from secmsg.retrieve.web.page import CtxDep, MessagePath, SignedInDep

router = page_router()


@router.get("/web/sent", response_class=HTMLResponse)
async def sent_list(ctx: CtxDep, session: SignedInDep) -> Response:
    docs = await ctx.web.queries.sent(session.tenant_id, session.address, 100)
    return await ctx.page("sent.html", messages=docs)


@router.get("/web/sent/{message_id}", response_class=HTMLResponse)
async def sent_slip(message_id: MessagePath, ctx: CtxDep, session: SignedInDep,
                    ip: ClientIpDep, ua: UserAgentDep) -> Response:
    deps, web = ctx.deps, ctx.web
    doc = await web.queries.sent_one(session.tenant_id, session.address, message_id)
    if doc is None:
        return await ctx.page("problem.html", status=404, title="Message not found",
                              text="You did not send a message with this link.")
    slip: dict[str, Any] | None = None
    slip_error = None
    try:
        issued = await tokens.issue_webmail_send_token(
            tokens=deps.tokens, accounts=deps.accounts, audit=deps.audit, session=session,
            now=deps.clock(), client_ip=ip, user_agent=ua)
        slip = await ingest_api.slip(http=web.http, ingest_url=deps.settings.ingest_url,
                                     token=issued.token, message_id=message_id)
    except ingest_api.IngestRefused as exc:
        slip_error = exc.detail
    return await ctx.page("slip.html", m=doc, slip=slip, slip_error=slip_error,
                          rows=_slip_rows(slip))


def _at(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return when(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _slip_rows(slip: dict[str, Any] | None) -> list[dict[str, Any]]:
    """ingest's slip (``GET /v1/messages/{id}/slip``) as table rows, times formatted."""
    rows = []
    for r in (slip or {}).get("recipients") or []:
        if not isinstance(r, dict):
            continue
        downloads = [d for d in r.get("downloads") or [] if isinstance(d, dict)]
        rows.append({
            "address": str(r.get("address", "")), "kind": str(r.get("kind", "")),
            "state": r.get("notification_state"), "at": _at(r.get("notification_at")),
            "reason": r.get("notification_reason"), "opened": _at(r.get("first_opened_at")),
            "downloads": len(downloads),
            "last_download": _at(downloads[-1].get("at")) if downloads else None,
            "access": r.get("access") or "open"})
    return rows
