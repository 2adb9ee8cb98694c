"""Reading: the inbox (with search), one message (sanitised HTML, attachments to download), the
page explaining a message that is gone, and the warning page before leaving for an outside
link. Attachments download through retrieve's API route with the same browser session."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from secmsg.retrieve import accounts, service
from secmsg.retrieve.deps import ClientIpDep, DepsDep, UserAgentDep, account_ports
from secmsg.retrieve.ports import MessageRecord, SessionRecord
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.page import CSP, CSP_REMOTE_IMAGES, Ctx, CtxDep, MessagePath, SignedInDep
from secmsg.retrieve.web.sanitize import clean_html
from secmsg.shared.errors import InvalidInput, NotFound, SecmsgError

router = page_router()
GONE_STATES = ("expired", "revoked", "recalled")


def _matches(r: MessageRecord, q: str) -> bool:
    return q in r.sender.lower() or q in r.subject.lower()


async def _search(*, session: SessionRecord, deps: DepsDep, q: str, cursor: str | None,
                  limit: int) -> tuple[list[MessageRecord], str | None]:
    """One page of matches: the service's pages, filtered, scanning at most 1000 messages
    per request (the next-page cursor resumes where the scan stopped)."""
    if not q:
        return await service.list_messages(session=session, messages=deps.messages,
                                           limit=limit, cursor=cursor, now=deps.clock())
    found: list[MessageRecord] = []
    scanned = 0
    while True:
        page, nxt = await service.list_messages(session=session, messages=deps.messages,
                                                limit=200, cursor=cursor, now=deps.clock())
        for r in page:
            scanned += 1
            if _matches(r, q):
                found.append(r)
                if len(found) == limit:
                    more = r is not page[-1] or nxt is not None
                    return found, service.encode_cursor(r) if more else None
        if nxt is None:
            return found, None
        cursor = nxt
        if scanned >= 1000:
            return found, cursor


@router.get("/web/inbox", response_class=HTMLResponse)
async def inbox(ctx: CtxDep, session: SignedInDep,
                q: Annotated[str, Query(max_length=200)] = "",
                cursor: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    web = ctx.web
    query = q.strip().lower()
    try:
        page, nxt = await _search(session=session, deps=ctx.deps, q=query, cursor=cursor,
                                  limit=web.settings.web_page_size)
    except InvalidInput:
        return RedirectResponse("/web/inbox", status_code=303)
    # Read marks come with the page's ``mailbox`` entries (store sets them): no second read.
    opened = {r.message_id for r in page if r.opened}
    next_url = None
    if nxt:
        next_url = "/web/inbox?" + (f"q={quote(q.strip())}&" if query else "") + \
            f"cursor={quote(nxt)}"
    return await ctx.page("inbox.html", messages=page, opened=opened, q=q.strip(),
                          next_url=next_url, first_page=cursor is None)


def _visible_recipients(r: MessageRecord, me: str) -> list[Any]:
    # Nobody learns who else was blind-copied; a bcc recipient sees only themselves as such.
    return [x for x in r.recipients if x.kind != "bcc" or x.address.lower() == me]


async def _gone_page(ctx: Ctx, session: SessionRecord, message_id: str,
                     reason: str | None = None) -> Response:
    reason = reason or await ctx.web.queries.why_gone(session.tenant_id, session.address,
                                                      message_id, ctx.deps.clock())
    if reason in GONE_STATES:
        return await ctx.page("gone.html", status=410, reason=reason)
    return await ctx.page("problem.html", status=404, title="Message not found",
                          text="There is no message here for the address you signed in with.")


def _gone_reason(exc: SecmsgError) -> str | None:
    """The reason carried by retrieve's 410 (revoked / recalled), whatever its exact class."""
    if exc.status != 410:
        return None
    for word in GONE_STATES:
        if word in (exc.code, *str(exc.detail).split()):
            return word
    return "revoked"


async def read(ctx: Ctx, session: SessionRecord, message_id: str, ip: str,
               ua: str | None) -> service.MessageView | Response:
    """The message (opening is audited), or the page saying why it cannot be opened."""
    deps = ctx.deps
    try:
        return await service.read_message(session=session, message_id=message_id,
                                          messages=deps.messages, blobs=deps.blobs,
                                          keyring=deps.keyring, audit=deps.audit,
                                          client_ip=ip, user_agent=ua, now=deps.clock(),
                                          max_body_bytes=deps.settings.max_body_bytes)
    except NotFound:
        return await _gone_page(ctx, session, message_id)
    except SecmsgError as exc:
        if (reason := _gone_reason(exc)) is not None:
            return await _gone_page(ctx, session, message_id, reason)
        raise


@router.get("/web/messages/{message_id}", response_class=HTMLResponse)
async def message_page(message_id: MessagePath, ctx: CtxDep, session: SignedInDep,
                       ip: ClientIpDep, ua: UserAgentDep,
                       images: Annotated[int, Query(ge=0, le=1)] = 0) -> Response:
    view = await read(ctx, session, message_id, ip, ua)
    if isinstance(view, Response):
        return view
    r = view.record
    body = clean_html(view.html, allow_remote_images=bool(images)) if view.html else None
    return await ctx.page(
        "message.html", csp=CSP_REMOTE_IMAGES if images and body else CSP, m=r,
        offer_password=await _offer_password(ctx, session),
        recipients=_visible_recipients(r, session.address), html=body.html if body else None,
        blocked_images=body.blocked_images if body else 0, text=view.text,
        attachments=[o for o in r.objects if o.role == "attachment"])


async def _offer_password(ctx: Ctx, session: SessionRecord) -> bool:
    """A password is offered after a read, never before it: on the message page, when the
    tenant's sign-in uses passwords and this person has none yet."""
    policy = await accounts.load_policy(account_ports(ctx.deps), session.tenant_id)
    if policy.signin == "code":
        return False
    account = await ctx.deps.accounts.get(tenant_id=session.tenant_id, email=session.address)
    return not (account and account.password_hash)


@router.get("/web/out", response_class=HTMLResponse)
async def outbound(ctx: CtxDep, u: Annotated[str, Query(max_length=4000)] = "") -> Response:
    await ctx.load_session()
    parts = urlsplit(u)
    ok = parts.scheme.lower() in ("http", "https", "mailto") and not any(
        ord(c) < 32 for c in u)
    return await ctx.page("out.html", status=200 if ok else 400, target=u if ok else None,
                          host=parts.hostname or "")
