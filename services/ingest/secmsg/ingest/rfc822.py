# Over 400 lines: the RFC 5322 path is one security boundary, reviewed whole
"""A whole RFC 5322 message in (``POST /v1/messages/rfc822``), a placeholder message out.

The content (bodies, every other leaf part as an attachment, and the raw message itself as
the ``original`` object) is stored through the same path as a multipart submission
(``service.accept``). The answer is the sender's message with its header block kept byte for
byte -- except the MIME headers that describe the old body, and any ``X-Secure-Message-*``
header the sender brought (it would spoof the toolbar markers) -- and the body replaced by the
rendered notification with the same markers notify writes.

The whole message is held in memory, capped at the tenant's message size: stream-parsing a
huge MIME message is out of scope.

What is refused (400, nothing stored), because the header we keep byte for byte and the header
the email package parses must be one and the same -- a recipient is only ever an address named
in a To, Cc or Bcc field that parsed cleanly:

* a header line with a bare CR, a bare LF (in a CRLF message) or a NUL: mail software splits
  lines on any of them, so ``Subject: hi<CR>Bcc: x`` would be a Bcc field to one reader and a
  subject to another;
* white space between a field name and its colon, and anything else that makes the email
  package read the header block differently from this module;
* a From, To, Cc or Bcc field with a parse defect (8-bit UTF-8 in it is fine), or whose
  encoded words decode to a control character;
* a Subject, display name or threading field with a control character other than TAB after
  decoding (``shared.headers.check_header_value``, the same rule as the JSON path);
* multipart nesting deeper than ``MAX_MIME_DEPTH`` (64) levels.

A ``message/*`` part (a forwarded mail, a bounce report) is one attachment whose bytes are
exactly those in the message (decoded only from base64 or quoted-printable if the sender
encoded it): it is not parsed and so never re-serialised.
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
from email.errors import MessageDefect
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, Protocol, cast

from secmsg.ingest import service, upload
from secmsg.ingest.envelope import (
    _check_address,
    attachment_content_type,
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
from secmsg.shared.headers import check_header_value
from secmsg.shared.markers import HEADER_ID, HEADER_URL

CONTENT_TYPE = "message/rfc822"
# Headers describing the body we replace; X-Secure-Message-* are ours to write.
_REPLACED = frozenset({"content-type", "content-transfer-encoding", "mime-version",
                       "x-secure-message-id", "x-secure-message-url"})
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_NAME_BEFORE_SPACE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]+:")
# How deeply multiparts may nest (a real client's stay under ten; the email package recurses
# once per level and fails at about a thousand).
MAX_MIME_DEPTH = 64
# 8-bit UTF-8 in an address field (RFC 6532) is the one defect that is not ambiguity: its
# bytes are decoded below and refused if they are not UTF-8.
_TOLERATED_DEFECTS = (email_errors.UndecodableBytesDefect,)
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
    """The header fields (each a list of raw lines joined, line ends kept) and the newline.

    The newline is that of the empty line ending the header (CRLF or LF); every header line
    must end with it and hold no other CR or LF, nor a NUL.
    """
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf < 0 and lf < 0:
        raise InvalidInput("the message has no empty line between its header and its body")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, newline = raw[:crlf], b"\r\n"
    else:
        head, newline = raw[:lf], b"\n"
    fields: list[bytes] = []
    for line in head.split(newline):
        continued = line[:1] in (b" ", b"\t")
        if continued and not fields:
            raise InvalidInput("the message header starts with a continuation line")
        name = _field_label(fields[-1] if continued else line)
        for bad, what in ((b"\0", "a NUL byte"), (b"\r", "a bare CR (a line break that is not "
                          "CRLF)"), (b"\n", "a bare LF (a line break that is not CRLF)")):
            if bad in line:
                raise InvalidInput(f"the {name} header contains {what}")
        if continued:
            fields[-1] += line + newline
        elif _FIELD_NAME.match(line):
            fields.append(line + newline)
        elif _NAME_BEFORE_SPACE.match(line):
            raise InvalidInput(f"the {name} header has white space before its colon")
        else:
            raise InvalidInput("the message header has a line that is not a header field "
                               "(name: value)")
    if not fields:
        raise InvalidInput("the message has no header fields")
    return fields, newline


def _field_label(line: bytes) -> str:
    """The field name of a raw header line as it can be shown in an error ("a header line"
    if it has none)."""
    m = re.match(rb"^([\x21-\x39\x3b-\x7e]{1,64})[ \t]*:", line)
    return m.group(1).decode("ascii") if m else "a header line's"


def _field_name(raw_field: bytes) -> str:
    return raw_field.split(b":", 1)[0].strip().decode("ascii").lower()


def _header(msg: Message, name: str) -> Any:
    try:
        value = msg[name]
        return None if value is None else str(value)
    except (ValueError, IndexError, TypeError, email_errors.HeaderParseError) as exc:
        raise InvalidInput(f"the {name} header cannot be parsed") from exc
    except RecursionError:
        raise InvalidInput(f"the {name} header nests comments too deeply") from None


def _unescape(name: str, value: str) -> str:
    """``value`` with the 8-bit bytes the parser kept as surrogates read as UTF-8."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise InvalidInput(f"the {name} header has 8-bit bytes that are not UTF-8") from None


class _AddressField(Protocol):
    """What ``get_all`` gives for an address field under ``email.policy.default`` (a str
    subclass built by the header registry; the stubs say plain ``str``)."""

    @property
    def defects(self) -> tuple[MessageDefect, ...]: ...
    @property
    def addresses(self) -> tuple[Address, ...]: ...


def _addresses(msg: Message, name: str) -> list[str]:
    out: list[str] = []
    try:
        for value in msg.get_all(name) or ():
            field = cast(_AddressField, value)
            defects = [d for d in field.defects if not isinstance(d, _TOLERATED_DEFECTS)]
            if defects:
                raise InvalidInput(f"the {name} header does not parse cleanly: {defects[0]}")
            for addr in field.addresses:
                check_header_value(name, _unescape(name, str(addr.display_name or "")))
                out.append(_check_address(name, _unescape(name, addr.addr_spec)))
    except (AttributeError, ValueError, IndexError, TypeError,
            email_errors.HeaderParseError) as exc:
        # e.g. an encoded word that decodes to CR or LF inside an address
        raise InvalidInput(f"the {name} header cannot be parsed: {exc}") from exc
    except RecursionError:
        raise InvalidInput(f"the {name} header nests comments or groups too deeply") from None
    return out


def _decoded(part: Message) -> bytes:
    """A leaf part's body with its base64 or quoted-printable layer removed."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # unknown charset and the like
        content = _decoded(part).decode("utf-8", "replace")
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


class _Part(EmailMessage):
    """A part as this module reads it: a ``message/*`` part is one opaque attachment.

    The parser asks ``get_content_type`` whether a part's body is a message of its own to
    parse; saying ``application/octet-stream`` for ``message/*`` keeps the body as the bytes
    that came (re-serialising a parsed forward would change its line ends and folding) and
    keeps forwards inside forwards from nesting the parser. ``declared_type`` is the truth.
    """

    def get_content_type(self) -> str:
        declared = self.declared_type()
        return "application/octet-stream" if declared.startswith("message/") else declared

    def declared_type(self) -> str:
        return super().get_content_type()


_POLICY = default_policy.clone(message_factory=_Part)


def _leaves(msg: _Part) -> list[_Part]:
    """The non-multipart parts in document order, once the nesting depth is checked; a
    multipart whose structure is broken (no boundary, no first boundary) is refused."""
    out: list[_Part] = []
    stack: list[tuple[_Part, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_MIME_DEPTH:
            raise InvalidInput(f"the MIME structure nests more than {MAX_MIME_DEPTH} levels "
                               "deep")
        for defect in part.defects:
            if isinstance(defect, _FATAL_DEFECTS):
                raise InvalidInput(f"the MIME structure is broken: {type(defect).__name__}")
        payload = part.get_payload()
        if isinstance(payload, list):  # multipart; every part is a _Part (_POLICY's factory)
            stack.extend((sub, depth + 1) for sub in reversed(payload) if isinstance(sub, _Part))
        else:
            out.append(part)
    return out


def _same_header(msg: Message, fields: list[bytes]) -> None:
    # The fields this module keeps and the ones the email package read must be the same
    # list, or a recipient could come from a field the sender's header does not show.
    if [k.lower() for k in msg] != [_field_name(f) for f in fields]:
        raise InvalidInput("the message header cannot be read unambiguously")


def parse(raw: bytes, tenant: Tenant) -> Parsed:
    fields, newline = split_header(raw)
    try:
        msg: _Part = BytesParser(policy=_POLICY).parsebytes(raw)  # type: ignore[assignment]
    except RecursionError:
        raise InvalidInput(f"the MIME structure nests more than {MAX_MIME_DEPTH} levels "
                           "deep") from None
    _same_header(msg, fields)
    leaves = _leaves(msg)
    froms = _addresses(msg, "From")
    if len(froms) != 1:
        raise InvalidInput("the message needs exactly one From address")
    seen: set[str] = set()
    recipients: list[Recipient] = []
    for name, kind in (("To", "to"), ("Cc", "cc"), ("Bcc", "bcc")):
        for addr in _addresses(msg, name):
            if addr.lower() not in seen:
                seen.add(addr.lower())
                recipients.append(Recipient(address=addr, kind=kind))
    if not recipients:
        raise InvalidInput("the message has no recipients (To, Cc and Bcc are empty)")
    if len(recipients) > tenant.max_recipients:
        raise PayloadTooLarge(f"{len(recipients)} recipients, the tenant allows at most "
                              f"{tenant.max_recipients}")
    subject = _header(msg, "Subject") or ""
    check_header_value("Subject", subject)
    for name in ("Message-ID", "In-Reply-To", "References", "Date"):
        value = _header(msg, name)
        if value is not None:
            check_header_value(name, value)

    text = html = None
    attachments: list[Attachment] = []
    for part in leaves:
        ctype = part.declared_type()
        is_attachment = part.get_content_disposition() == "attachment"
        if ctype == "text/plain" and text is None and not is_attachment:
            text = _text_of(part)
        elif ctype == "text/html" and html is None and not is_attachment:
            html = _text_of(part)
        else:
            # The bytes as they came (only a base64 or quoted-printable layer removed).
            data = _decoded(part)
            default_name = "message.eml" if ctype == "message/rfc822" else "attachment"
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
                opts: upload.Options) -> tuple[service.Accepted, datetime | None]:
    tenant = creds.tenant
    if idempotency_key is not None:
        service.check_idempotency_key(idempotency_key)
    expires: list[datetime | None] = [None]

    async def produce(message_id: str, now: datetime, uploads: list[Any]) -> MessageReceived:
        stored: list[StoredObject] = []

        async def put(role: str, filename: str | None, ctype: str, data: bytes) -> None:
            up = upload.new_upload(blobs=blobs, key_ring=key_ring, tenant_id=tenant.tenant_id,
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
    context = templating.notification_context(
        sender=parsed.sender, tenant_name=profile.display_name, logo_url=profile.logo_url,
        subject=parsed.subject, attachment_count=len(parsed.attachments),
        expires_at=expires_at.astimezone(UTC) if expires_at else None, link=url,
        message_id=message_id, footer=profile.footer, disclaimers=profile.disclaimers,
        disclaimer=None)

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
        HEADER_ID.encode(), b": ", message_id.encode("ascii"), nl,
        HEADER_URL.encode(), b": ", url.encode("ascii"), nl,
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
