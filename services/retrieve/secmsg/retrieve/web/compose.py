"""Writing: a new message, reply and reply-all (quoted), and sending through ingest with a
short-lived send token minted for this browser session."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from secmsg.retrieve import service, tokens
from secmsg.retrieve.deps import ClientIpDep, UserAgentDep
from secmsg.retrieve.ports import SessionRecord
from secmsg.retrieve.web import csrf
from secmsg.retrieve.web import ingest as ingest_api
from secmsg.retrieve.web.errors import page_router
from secmsg.retrieve.web.filters import when
from secmsg.retrieve.web.messages import read
from secmsg.retrieve.web.page import ID, Ctx, CtxDep, MessagePath, SignedInDep

log = logging.getLogger(__name__)
router = page_router()
_SPLIT = re.compile(r"[,;\s]+")
MAX_FORM_PART = 4 * 1024 * 1024  # ingest's envelope limit; larger text would be refused there
SEND_FORM_UNREADABLE = ("The message could not be read: it may have too many attachments or "
                        "too much text. Nothing was sent")
SEND_FORM_EXPIRED = ("For your security this form could not be accepted (it was opened before "
                     "your last sign-in or sign-out). Check the message and send it again.")


def _addresses(value: object) -> list[str]:
    return [a for a in _SPLIT.split(value if isinstance(value, str) else "") if a][:100]


def _re(subject: str) -> str:
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}".strip()


def _quote(text: str | None, sender: str, at: str) -> str:
    if not text:
        return ""
    quoted = "\n".join("> " + line for line in text[:20000].splitlines())
    return f"\n\nOn {at}, {sender} wrote:\n{quoted}\n"


async def _compose_page(ctx: Ctx, session: SessionRecord, *, status: int = 200,
                        **values: Any) -> HTMLResponse:
    # Someone who is not a tenant user may only write to people at the tenant who wrote to
    # them (ingest enforces it); offer those addresses.
    suggestions: list[str] = []
    if ctx.role is None:
        page, _ = await service.list_messages(session=session, messages=ctx.deps.messages,
                                              limit=200, cursor=None, now=ctx.deps.clock())
        suggestions = sorted({r.sender for r in page})
    form = {"to": "", "cc": "", "bcc": "", "subject": "", "text": "", "in_reply_to": "",
            **values.pop("form", {})}
    return await ctx.page("compose.html", status=status, form=form, suggestions=suggestions,
                          max_attachments=ctx.web.settings.web_max_attachments, **values)


@router.get("/web/compose", response_class=HTMLResponse)
async def compose(ctx: CtxDep, session: SignedInDep) -> Response:
    return await _compose_page(ctx, session, heading="New secure message")


@router.get("/web/messages/{message_id}/reply", response_class=HTMLResponse)
async def reply(message_id: MessagePath, ctx: CtxDep, session: SignedInDep, ip: ClientIpDep,
                ua: UserAgentDep, all: Annotated[int, Query(ge=0, le=1)] = 0) -> Response:
    view = await read(ctx, session, message_id, ip, ua)
    if isinstance(view, Response):
        return view
    r = view.record
    me = session.address
    cc: list[str] = []
    if all:
        cc = [x.address for x in r.recipients
              if x.kind in ("to", "cc") and x.address.lower() not in (me, r.sender.lower())]
    return await _compose_page(
        ctx, session, heading="Reply all" if all else "Reply", replying_to=r,
        form={"to": r.sender, "cc": ", ".join(cc), "subject": _re(r.subject),
              "text": _quote(view.text, r.sender, when(r.received_at)),
              "in_reply_to": r.message_id})


@router.post("/web/send", response_class=HTMLResponse)
async def send(request: Request, ctx: CtxDep, session: SignedInDep, ip: ClientIpDep,
               ua: UserAgentDep) -> Response:
    deps, web = ctx.deps, ctx.web
    # File parts are spooled to disk by Starlette beyond 1 MiB; ingest.submit streams them.
    # The form is read here (not declared) so its limits are this page's, and the CSRF field
    # is checked after it is read (a refused form keeps what was typed).
    try:
        form = await request.form(max_files=web.settings.web_max_attachments, max_fields=20,
                                  max_part_size=MAX_FORM_PART)
    except StarletteHTTPException as exc:
        # Too many attachments, a text part over the limit, a broken upload: a page that
        # says so (Starlette's own reason), not the API's JSON error.
        return await _compose_page(ctx, session, status=400,
                                   heading="Your message was not sent",
                                   error=f"{SEND_FORM_UNREADABLE} ({exc.detail})",
                                   files_lost=True)
    try:
        fields = {k: str(form.get(k) or "") for k in
                  ("to", "cc", "bcc", "subject", "text", "in_reply_to")}
        files = [f for f in form.getlist("attachment")
                 if isinstance(f, UploadFile) and (f.filename or f.size)]
        if not ctx.csrf_ok(form.get(csrf.FIELD)):
            # Nothing is sent, but the typed message comes back in a fresh form: a page
            # served no-store may not survive the Back button.
            return await _compose_page(ctx, session, status=403, form=fields,
                                       heading="Your message was not sent",
                                       error=SEND_FORM_EXPIRED, files_lost=bool(files))
        envelope: dict[str, Any] = {
            "from": session.address, "to": _addresses(fields["to"]),
            "cc": _addresses(fields["cc"]), "subject": fields["subject"].strip(),
            "text": fields["text"]}
        if ctx.role is not None and fields["bcc"]:
            envelope["bcc"] = _addresses(fields["bcc"])
        if re.fullmatch(ID, fields["in_reply_to"]):
            envelope["in_reply_to"] = fields["in_reply_to"]
        try:
            issued = await tokens.issue_webmail_send_token(
                tokens=deps.tokens, accounts=deps.accounts, audit=deps.audit,
                session=session, now=deps.clock(), client_ip=ip, user_agent=ua)
            message_id = await ingest_api.submit(
                http=web.http, ingest_url=deps.settings.ingest_url, token=issued.token,
                envelope=envelope, files=files)
        except ingest_api.IngestRefused as exc:
            status = exc.status if 400 <= exc.status < 600 else 502
            return await _compose_page(ctx, session, status=status, form=fields,
                                       heading="Your message was not sent", error=exc.detail,
                                       files_lost=bool(files))
    finally:
        await form.close()  # removes the spooled attachment files
    log.info("webmail message submitted", extra={"event": "webmail.sent"})
    return await ctx.page("sent_ok.html", message_id=message_id,
                          recipients=envelope["to"] + envelope["cc"])
