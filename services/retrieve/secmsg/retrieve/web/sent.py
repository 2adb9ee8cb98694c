"""What I sent: the list, and each message's delivery slip (from ingest's
``GET /v1/messages/{id}/slip``, read with a send token minted for this browser session)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import tokens
from secmsg.retrieve.deps import ClientIpDep, UserAgentDep
from secmsg.retrieve.web import ingest as ingest_api
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.filters import when
from secmsg.retrieve.web.page import CtxDep, MessagePath, SignedInDep
from secmsg.shared.documents import MAILBOX_KEY_LEN

router = page_router()


SENT_PAGE = 100
_KEY = re.compile(f"[0-9a-f]{{{MAILBOX_KEY_LEN}}}")


@router.get("/web/sent", response_class=HTMLResponse)
async def sent_list(ctx: CtxDep, session: SignedInDep,
                    after: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """Newest first, ``SENT_PAGE`` a page; ``after``: the key of the last one shown."""
    if after is not None and not _KEY.fullmatch(after):
        return RedirectResponse("/web/sent", status_code=303)
    docs = await ctx.web.queries.sent(session.tenant_id, session.address, SENT_PAGE + 1,
                                      after)
    more = len(docs) > SENT_PAGE
    docs = docs[:SENT_PAGE]
    next_url = f"/web/sent?after={docs[-1]['key']}" if more and docs else None
    return await ctx.page("sent.html", messages=docs, next_url=next_url,
                          first_page=after is None)


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


STATUS_WORDS = {
    "queued": "Not notified yet", "not_notified": "Placeholder sent by your mail server",
    "notified": "Notified", "deferred": "Notification delayed",
    "failed": "Notification failed", "bounced": "Notification bounced", "opened": "Opened",
    "downloaded": "Downloaded", "fetched_by_toolbar": "Fetched by a toolbar",
    "acknowledged_by_toolbar": "In the mailbox (toolbar)"}


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _slip_rows(slip: dict[str, Any] | None) -> list[dict[str, Any]]:
    """ingest's slip (``GET /v1/messages/{id}/slip``) as table rows, times formatted. Every
    cell says something: a fact that has not happened reads "not yet" or "none"."""
    rows = []
    for r in (slip or {}).get("recipients") or []:
        if not isinstance(r, dict):
            continue
        n = _object(r.get("notification"))
        toolbar = _object(r.get("toolbar"))
        downloads = [d for d in r.get("downloads") or [] if isinstance(d, dict)]
        rows.append({
            "address": str(r.get("address", "")), "kind": str(r.get("kind", "")),
            "status": STATUS_WORDS.get(str(r.get("status")), str(r.get("status", ""))),
            "summary": str(r.get("summary", "")),
            "state": str(n.get("state", "queued")), "at": _at(n.get("at")),
            "reason": n.get("reason"), "next_try": _at(n.get("next_attempt_at")),
            "bounce_status": n.get("bounce_status"),
            "opened": int(r.get("opened") or 0), "first_opened": _at(r.get("first_opened_at")),
            "downloads": [{"name": str(d.get("file_name", "")), "times": int(d.get("times") or 1),
                           "last": _at(d.get("last_at"))} for d in downloads],
            "fetched": int(toolbar.get("fetched") or 0),
            "last_fetched": _at(toolbar.get("last_fetched_at")),
            "acknowledged": _at(toolbar.get("acknowledged_at")),
            "access": r.get("access") or "open"})
    return rows
