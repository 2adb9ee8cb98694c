"""A whole RFC 5322 message in (``POST /v1/messages/rfc822``), a placeholder message out.

The content (bodies, every other leaf part as an attachment, and the raw message itself as
the ``original`` object) is stored through the same path as a multipart submission
(``service.accept``). The answer is the sender's message with its header block kept byte for
byte -- except the MIME headers that describe the old body, and any ``X-Secure-Message-*``
header the sender brought (it would spoof the toolbar markers) -- and the body replaced by the
rendered notification with the same markers notify writes.

The whole message is held in memory, capped at the tenant's message size: stream-parsing a
huge MIME message is out of scope.
"""

from __future__ import annotations

import asyncio
import binascii
import re
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import errors as email_errors
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from secmsg.ingest import service
from secmsg.ingest.envelope import (
    _check_address,
    attachment_content_type,
    check_header_value,
    sanitize_filename,
)
from secmsg.ingest.ports import (
    BlobStore,
    Credentials,
    EventSink,
    IdempotencyStore,
    TemplateStore,
    Tenant,
)
from secmsg.shared import templating
from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import InvalidInput, PayloadTooLarge
from secmsg.shared.events import MessageReceived, Recipient, StoredObject

CONTENT_TYPE = "message/rfc822"
# Headers describing the body we replace; X-Secure-Message-* are ours to write.
_REPLACED = frozenset({"content-type", "content-transfer-encoding", "mime-version",
                       "x-secure-message-id", "x-secure-message-url"})
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_FATAL_DEFECTS = (email_errors.NoBoundaryInMultipartDefect,
                  email_errors.StartBoundaryNotFoundDefect,
                  email_errors.MultipartInvariantViolationDefect)
_TEXT, _HTML = "notification_text", "notification_html"


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Parsed:
    raw: bytes
    header_lines: list[bytes]  # kept lines, each with its own line end
    newline: bytes
    sender: str
    recipients: list[Recipient]
    subject: str
    text: str | None
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)


async def read_capped(body: AsyncIterator[bytes], cap: int) -> bytes:
    buf = bytearray()
    async for chunk in body:
        buf += chunk
        if len(buf) > cap:
            raise PayloadTooLarge(f"the message is larger than this tenant's limit of "
                                  f"{cap} bytes")
    return bytes(buf)


def split_header(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each a list of raw lines joined, line ends kept) and the newline."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf < 0 and lf < 0:
        raise InvalidInput("the message has no empty line between its header and its body")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, newline = raw[:crlf + 2], b"\r\n"
    else:
        head, newline = raw[:lf + 1], b"\n"
    if b"\0" in head:
        raise InvalidInput("the message header contains a NUL byte")
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise InvalidInput("the message header starts with a continuation line")
            fields[-1] += line
        elif _FIELD_NAME.match(line):
            fields.append(line)
        else:
            raise InvalidInput("the message header has a line that is not a header field "
                               "(name: value)")
    if not fields:
        raise InvalidInput("the message has no header fields")
    return fields, newline


def _field_name(raw_field: bytes) -> str:
    return raw_field.split(b":", 1)[0].strip().decode("ascii").lower()


def _header(msg: Message, name: str) -> Any:
    try:
        return msg[name]
    except (ValueError, IndexError, TypeError, email_errors.HeaderParseError) as exc:
        raise InvalidInput(f"the {name} header cannot be parsed") from exc


def _addresses(msg: Message, name: str) -> list[str]:
    out: list[str] = []
    for value in msg.get_all(name) or ():
        try:
            groups = value.addresses
        except (AttributeError, ValueError, IndexError, email_errors.HeaderParseError) as exc:
            raise InvalidInput(f"the {name} header cannot be parsed") from exc
        for addr in groups:
            check_header_value(name, str(addr.display_name or ""))
            out.append(_check_address(name, addr.addr_spec))
    return out


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # unknown charset and the like
        content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


def _leaves(part: EmailMessage) -> list[EmailMessage]:
    # An attached message/rfc822 stays one attachment (a forwarded mail), not its parts.
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        return [part]
    out: list[EmailMessage] = []
    for sub in part.iter_parts():
        out.extend(_leaves(sub))  # type: ignore[arg-type]
    return out


def _check_structure(msg: Message) -> None:
    for part in msg.walk():
        for defect in part.defects:
            if isinstance(defect, _FATAL_DEFECTS):
                raise InvalidInput(f"the MIME structure is broken: {type(defect).__name__}")


def parse(raw: bytes, tenant: Tenant) -> Parsed:
    fields, newline = split_header(raw)
    msg: EmailMessage = BytesParser(policy=default_policy).parsebytes(raw)  # type: ignore[assignment]
    _check_structure(msg)
    froms = _addresses(msg, "From")
    if len(froms) != 1:
        raise InvalidInput("the message needs exactly one From address")
    seen: set[str] = set()
    recipients: list[Recipient] = []
    for name, kind in (("To", "to"), ("Cc", "cc"), ("Bcc", "bcc")):
        for addr in _addresses(msg, name):
            if addr.lower() not in seen:
                seen.add(addr.lower())
                recipients.append(Recipient(address=addr, kind=kind))  # type: ignore[arg-type]
    if not recipients:
        raise InvalidInput("the message has no recipients (To, Cc and Bcc are empty)")
    if len(recipients) > tenant.max_recipients:
        raise PayloadTooLarge(f"{len(recipients)} recipients, the tenant allows at most "
                              f"{tenant.max_recipients}")
    subject_h = _header(msg, "Subject")
    subject = str(subject_h) if subject_h is not None else ""
    check_header_value("Subject", subject)
    for name in ("Message-ID", "In-Reply-To", "References", "Date"):
        value = _header(msg, name)
        if value is not None:
            check_header_value(name, str(value))

    text = html = None
    attachments: list[Attachment] = []
    for part in _leaves(msg):
        ctype = part.get_content_type()
        is_attachment = part.get_content_disposition() == "attachment"
        if ctype == "text/plain" and text is None and not is_attachment:
            text = _text_of(part)
        elif ctype == "text/html" and html is None and not is_attachment:
            html = _text_of(part)
        else:
            if ctype == "message/rfc822":
                inner = part.get_payload(0)
                data = inner.as_bytes() if isinstance(inner, Message) else b""
                default_name = "message.eml"
            else:
                data = part.get_payload(decode=True) or b""
                default_name = "attachment"
            try:
                filename = part.get_filename()
            except (ValueError, IndexError, email_errors.HeaderParseError):
                filename = None
            attachments.append(Attachment(sanitize_filename(filename or default_name),
                                          attachment_content_type(ctype), data))
    if len(attachments) > tenant.max_attachments:
        raise PayloadTooLarge(f"more than {tenant.max_attachments} attachments")
    kept = [f for f in fields if _field_name(f) not in _REPLACED]
    return Parsed(raw=raw, header_lines=kept, newline=newline, sender=froms[0],
                  recipients=recipients, subject=subject, text=text, html=html,
                  attachments=attachments)


async def store(*, creds: Credentials, parsed: Parsed, idempotency_key: str | None,
                blobs: BlobStore, idem: IdempotencyStore, events: EventSink, key_ring: KeyRing,
                opts: service.Options) -> tuple[service.Accepted, datetime | None]:
    tenant = creds.tenant
    if idempotency_key is not None:
        service.check_idempotency_key(idempotency_key)
    expires: list[datetime | None] = [None]

    async def produce(message_id: str, now: datetime, uploads: list[Any]) -> MessageReceived:
        stored: list[StoredObject] = []

        async def put(role: str, filename: str | None, ctype: str, data: bytes) -> None:
            up = service.new_upload(blobs=blobs, key_ring=key_ring, tenant_id=tenant.tenant_id,
                                    message_id=message_id, role=role, filename=filename,
                                    content_type=ctype, opts=opts, uploads=uploads,
                                    generation=tenant.key_generation)
            await up.write(data)
            stored.append(await up.finish())

        text = parsed.text if parsed.text is not None or parsed.html is not None else ""
        if text is not None:
            await put("text", None, "text/plain; charset=utf-8", text.encode("utf-8", "replace"))
        if parsed.html is not None:
            await put("html", None, "text/html; charset=utf-8",
                      parsed.html.encode("utf-8", "replace"))
        for a in parsed.attachments:
            await put("attachment", a.filename, a.content_type, a.data)
        await put("original", None, CONTENT_TYPE, parsed.raw)
        days = tenant.default_expiry_days
        expires[0] = None if days is None else now + timedelta(days=days)
        return MessageReceived(
            tenant_id=tenant.tenant_id, message_id=message_id, sender=parsed.sender,
            recipients=parsed.recipients, subject=parsed.subject, objects=stored,
            expires_at=expires[0], submitted_by=creds.submitted_by,
            # The organisation's server delivers the placeholder: no second notification.
            notify=False)

    accepted = await service.accept(creds=creds, idempotency_key=idempotency_key,
                                    produce=produce, blobs=blobs, idem=idem, events=events,
                                    opts=opts)
    return accepted, expires[0]


def _body(kind: str, source: str | None, context: dict[str, Any]) -> str:
    return templating.render_or_default(kind, source, context)


def _qp(text: str, newline: bytes) -> bytes:
    lines = text.encode("utf-8").splitlines()
    return binascii.b2a_qp(newline.join(lines) + newline, istext=True).replace(
        b"\r\n", newline)


async def placeholder(*, parsed: Parsed, creds: Credentials, message_id: str,
                      expires_at: datetime | None, public_url: str,
                      templates: TemplateStore) -> bytes:
    tenant_id = creds.tenant.tenant_id
    profile = await templates.profile(tenant_id)
    url = templating.message_url(public_url, tenant_id, message_id)
    context = {
        "sender": parsed.sender, "tenant_name": profile.display_name,
        "logo_url": profile.logo_url, "subject": parsed.subject,
        "attachment_count": len(parsed.attachments),
        "expires_at": expires_at.astimezone(UTC) if expires_at else None, "link": url,
        "message_id": message_id, "footer": profile.footer,
        "disclaimers": list(profile.disclaimers), "disclaimer": None,
    }

    def render() -> tuple[str, str]:
        sources = {k: (t.source if (t := profile.templates.get(k)) else None)
                   for k in (_TEXT, _HTML)}
        text_body = _body(_TEXT, sources[_TEXT], context).rstrip("\n") + "\n"
        html_body = _body(_HTML, sources[_HTML], context)
        return templating.render_frames(text_body=text_body, html_body=html_body,
                                        message_id=message_id, url=url,
                                        subject=parsed.subject)

    text, html = await asyncio.to_thread(render)
    nl = parsed.newline
    boundary = f"==============={secrets.randbelow(sys.maxsize):019d}==".encode()
    return b"".join((
        *parsed.header_lines,
        b"X-Secure-Message-Id: ", message_id.encode("ascii"), nl,
        b"X-Secure-Message-Url: ", url.encode("ascii"), nl,
        b"MIME-Version: 1.0", nl,
        b'Content-Type: multipart/alternative; boundary="', boundary, b'"', nl, nl,
        b"--", boundary, nl,
        b'Content-Type: text/plain; charset="utf-8"', nl,
        b"Content-Transfer-Encoding: quoted-printable", nl, nl,
        _qp(text, nl),
        nl, b"--", boundary, nl,
        b'Content-Type: text/html; charset="utf-8"', nl,
        b"Content-Transfer-Encoding: quoted-printable", nl, nl,
        _qp(html, nl),
        nl, b"--", boundary, b"--", nl,
    ))
