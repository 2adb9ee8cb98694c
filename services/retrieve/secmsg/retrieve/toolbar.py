"""The toolbar API's logic: recognise a notification, hand back the whole message as RFC 5322
(the original of an Outlook/Exchange submission, or one built from an API submission), and
record fetches and acknowledgements in the audit trail.

Access goes through ``service``'s loader (``get_mine``), so whatever refuses a message to the
webmail (not yours, expired, purged, revoked, recalled) refuses it here too.

Everything streams: bodies and attachments are decrypted segment by segment and base64-encoded
line by line, so memory stays constant whatever the attachment size.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email import errors as email_errors
from email import policy as email_policy
from email.message import EmailMessage, Message
from email.parser import Parser
from email.utils import format_datetime

from secmsg.retrieve import service
from secmsg.retrieve.access import GuardedMessageRepo, RevocationGuard
from secmsg.retrieve.headers import safe_content_type, safe_filename
from secmsg.retrieve.ports import (
    AuditPublisher,
    BlobReader,
    MessageRecord,
    MessageRepo,
    SessionRecord,
)
from secmsg.shared import markers
from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import (
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    SecmsgError,
)
from secmsg.shared.events import AuditAction, AuditRecorded, StoredObject
from secmsg.shared.ids import is_message_id

RETRIEVED_HEADER = markers.HEADER_RETRIEVED
# Headers of an original we never pass on: ours to write, and a sender's copy would spoof them.
_OURS = markers.PLATFORM_HEADERS
# ... nor the blind copies: a to/cc recipient must not learn them, nor one bcc of another.
_NOT_PASSED_ON = _OURS | {"bcc", "resent-bcc"}
_HEADER_CAP = 256 * 1024  # longest header line of an original we pass on
_B64_LINE = 57  # bytes per 76-character base64 line (RFC 2045)
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
_SMTP = email_policy.SMTP


Loader = Callable[..., Awaitable[MessageRecord]]


def require_read(session: SessionRecord) -> None:
    # A session may do all its person may; a token only what its scopes say.
    if "read" not in session.scopes:
        raise Forbidden("this token does not have the read scope")


# --- detection -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Detected:
    message_id: str
    tenant_id: str | None


def from_url(url: str) -> Detected:
    link = markers.parse_message_url(url)
    if link is None:
        raise InvalidInput("url is not a secure message link (…/m/<tenant>/<message id>)")
    return Detected(link[1], link[0])


def _bodies(msg: Message) -> list[str]:
    out: list[str] = []
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        try:
            content = part.get_content()  # type: ignore[attr-defined]
        except (LookupError, UnicodeError, ValueError, KeyError):
            payload = part.get_payload(decode=True)
            content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if isinstance(content, str):
            out.append(content)
    return out


def from_raw(raw: str) -> Detected:
    """The message id (and tenant, from the link) of a notification or placeholder: the
    ``X-Secure-Message-*`` headers, or the body markers when a client stripped the headers."""
    try:
        msg = Parser(policy=email_policy.default).parsestr(raw)
        header_id = str(msg.get(markers.HEADER_ID) or "").strip().lower()
        header_url = str(msg.get(markers.HEADER_URL) or "").strip()
        bodies = _bodies(msg)
    except (email_errors.MessageError, ValueError, IndexError, TypeError):
        raise InvalidInput("raw is not a parsable email message") from None
    if not is_message_id(header_id):
        header_id = ""
    body_id = body_url = ""
    for text in bodies:
        if not body_id and (found_ids := markers.body_message_ids(text)):
            body_id = found_ids[0]
        if not body_url and (found_urls := markers.body_message_urls(text)):
            body_url = found_urls[0]
    message_id = header_id or body_id
    if not message_id:
        raise NotFound("no secure message markers in this message")
    tenant: str | None = None
    for url in (header_url, body_url):
        link = markers.parse_message_url(url) if url else None
        if link and link[1] == message_id:
            tenant = link[0]
            break
    return Detected(message_id, tenant)


def detect(*, message_id: str | None, url: str | None, raw: str | None) -> Detected:
    given = [v for v in (message_id, url, raw) if v is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of message_id, url or raw")
    if message_id is not None:
        if not is_message_id(message_id):
            raise InvalidInput("message_id must be 32 lowercase hex characters")
        return Detected(message_id, None)
    if url is not None:
        return from_url(url)
    assert raw is not None
    return from_raw(raw)


async def available(*, session: SessionRecord, found: Detected, load: Loader,
                    messages: MessageRepo, now: datetime) -> bool:
    """Whether the signed-in person can fetch it now. Someone else's, another tenant's,
    expired, revoked: all just ``False``, with no hint which."""
    if found.tenant_id is not None and found.tenant_id != session.tenant_id:
        return False
    try:
        await load(session=session, message_id=found.message_id, messages=messages, now=now)
    except SecmsgError as exc:
        if exc.status in (404, 410):
            return False
        raise
    return True


# --- audit -----------------------------------------------------------------------------------

async def record(*, action: AuditAction, session: SessionRecord, record: MessageRecord,
                 audit: AuditPublisher, client_ip: str | None, user_agent: str | None,
                 now: datetime) -> None:
    await audit.publish(AuditRecorded(
        tenant_id=record.tenant_id, message_id=record.message_id, event_id=uuid.uuid4().hex,
        action=action, actor=session.address,
        subject_address=session.address,
        detail={"via": session.via, "client": "toolbar"},
        client_ip=client_ip, user_agent=user_agent[:512] if user_agent else None,
        occurred_at=now))


async def acknowledge(*, session: SessionRecord, message_id: str, load: Loader,
                      messages: MessageRepo, audit: AuditPublisher, client_ip: str | None,
                      user_agent: str | None, now: datetime) -> MessageRecord:
    require_read(session)
    rec = await load(session=session, message_id=message_id, messages=messages, now=now)
    await record(action="message.acknowledged", session=session, record=rec, audit=audit,
                 client_ip=client_ip, user_agent=user_agent, now=now)
    return rec


async def plan_fetch(*, session: SessionRecord, message_id: str, load: Loader,
                     messages: MessageRepo, audit: AuditPublisher, client_ip: str | None,
                     user_agent: str | None, now: datetime) -> MessageRecord:
    """Load and audit a fetch (``message.fetched``) before any byte is produced."""
    require_read(session)
    rec = await load(session=session, message_id=message_id, messages=messages, now=now)
    for obj in rec.objects:
        service.check_key(rec, obj)
    await record(action="message.fetched", session=session, record=rec, audit=audit,
                 client_ip=client_ip, user_agent=user_agent, now=now)
    return rec


# --- the RFC 5322 message --------------------------------------------------------------------

def retrieved_value(host: str, message_id: str, now: datetime) -> str:
    """``<host>; id=<message id>; <RFC 5322 date>``: the id lets a toolbar find (SEARCH
    HEADER) the copy it appended, which is how it stays idempotent."""
    clean = host if _HOST_RE.match(host) else "secmsg"
    return f"{clean}; id={message_id}; {format_datetime(now)}"


def built_message_id(record: MessageRecord) -> str:
    """Stable across fetches, so a client that appends twice sees the same Message-ID."""
    return f"<{record.message_id}@{record.tenant_id}.secmsg>"


def _plain(record: MessageRecord, obj: StoredObject, blobs: BlobReader,
           keyring: KeyRing) -> AsyncIterator[bytes]:
    return service.decrypt_stream(blobs=blobs, keyring=keyring, tenant_id=record.tenant_id,
                                  obj=obj, start=0, end=max(obj.size - 1, 0))


async def base64_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Base64 in 76-character CRLF lines, holding less than one line of input at a time
    beyond the chunk being encoded."""
    rest = b""
    async for chunk in chunks:
        data = rest + chunk
        whole = len(data) - len(data) % _B64_LINE
        if whole:
            view = memoryview(data)[:whole]
            yield b"".join(base64.b64encode(view[i:i + _B64_LINE]) + b"\r\n"
                           for i in range(0, whole, _B64_LINE))
        rest = data[whole:]
    if rest:
        yield base64.b64encode(rest) + b"\r\n"


def _fold(name: str, value: str) -> bytes:
    # The policy encodes non-ASCII (RFC 2047) and folds; values never carry CR/LF (below).
    if any(c in value for c in "\r\n\0"):
        raise InvalidInput(f"stored {name} contains a line break")
    return _SMTP.fold_binary(name, _SMTP.header_factory(name, value))


def _part_header(headers: list[tuple[str, str, dict[str, str]]]) -> bytes:
    """A leaf part's header block (parameters encoded per RFC 2231 where needed)."""
    part = EmailMessage(policy=_SMTP)
    for name, value, params in headers:
        part.add_header(name, value, **params)
    return part.as_bytes(policy=_SMTP)  # header block + the empty line


def _attachment_type(value: str) -> str:
    ctype = safe_content_type(value).split(";", 1)[0].strip().lower()
    # message/* and multipart/* may not be base64-encoded (RFC 2046): send them as bytes.
    if ctype.startswith(("message/", "multipart/")):
        return "application/octet-stream"
    return ctype


def _boundary() -> str:
    # Base64 lines never contain "-" or "_", so no content line can match this.
    return f"=_secmsg_{secrets.token_hex(12)}"


async def build_message(*, record: MessageRecord, blobs: BlobReader, keyring: KeyRing,
                        retrieved: str) -> AsyncIterator[bytes]:
    """An API-submitted message as RFC 5322 (CRLF): text/html alternatives, attachments;
    bcc recipients are never listed."""
    to = [r.address for r in record.recipients if r.kind == "to"]
    cc = [r.address for r in record.recipients if r.kind == "cc"]
    # Unfolded (ASCII, short): toolbars match it as one line.
    head = [f"{RETRIEVED_HEADER}: {retrieved}\r\n".encode("ascii"), _fold("From", record.sender)]
    if to:
        head.append(_fold("To", ", ".join(to)))
    if cc:
        head.append(_fold("Cc", ", ".join(cc)))
    head += [_fold("Subject", record.subject),
             _fold("Date", format_datetime(record.received_at)),
             _fold("Message-ID", built_message_id(record)), b"MIME-Version: 1.0\r\n"]
    bodies = [o for o in record.objects if o.role in ("text", "html")]
    bodies.sort(key=lambda o: o.role != "text")  # plain first: the last is preferred
    attachments = [o for o in record.objects if o.role == "attachment"]
    mixed, alt = _boundary(), _boundary()
    head.append(_fold("Content-Type", f'multipart/mixed; boundary="{mixed}"'))
    yield b"".join(head) + b"\r\n"
    yield f"--{mixed}\r\n".encode()
    # Not through EmailMessage: it would write an empty multipart body after the header.
    yield _fold("Content-Type", f'multipart/alternative; boundary="{alt}"') + b"\r\n"
    if not bodies:
        yield f"--{alt}\r\n".encode()
        yield _part_header([("Content-Type", "text/plain", {"charset": "utf-8"})])
        yield b"\r\n"
    for obj in bodies:
        yield f"--{alt}\r\n".encode()
        subtype = "plain" if obj.role == "text" else "html"
        yield _part_header([("Content-Type", f"text/{subtype}", {"charset": "utf-8"}),
                            ("Content-Transfer-Encoding", "base64", {})])
        async for line in base64_lines(_plain(record, obj, blobs, keyring)):
            yield line
    yield f"--{alt}--\r\n".encode()
    for obj in attachments:
        name = safe_filename(obj.filename)
        yield f"--{mixed}\r\n".encode()
        yield _part_header([("Content-Type", _attachment_type(obj.content_type), {"name": name}),
                            ("Content-Disposition", "attachment", {"filename": name}),
                            ("Content-Transfer-Encoding", "base64", {})])
        async for line in base64_lines(_plain(record, obj, blobs, keyring)):
            yield line
    yield f"--{mixed}--\r\n".encode()


def _field_name(line: bytes) -> str:
    return line.split(b":", 1)[0].strip().decode("latin-1").lower()


async def original_message(*, record: MessageRecord, obj: StoredObject, blobs: BlobReader,
                           keyring: KeyRing, retrieved: str) -> AsyncIterator[bytes]:
    """The decrypted original, byte for byte, with our header on top (in the original's own
    line ends), any ``X-Secure-Message-*`` header the sender brought removed, and no ``Bcc``
    (nobody is shown who was blind-copied).

    The header is filtered field by field as it streams (a field's continuation lines go
    with it), so a huge header block cannot carry a ``Bcc`` past the filter; a single header
    line longer than ``_HEADER_CAP`` stops the stream (``IntegrityError``)."""
    stream = _plain(record, obj, blobs, keyring)
    buf = b""
    top: bytes | None = None
    dropping = False
    async for chunk in stream:
        buf += chunk
        out: list[bytes] = []
        while (i := buf.find(b"\n")) >= 0:
            line, buf = buf[:i + 1], buf[i + 1:]
            if top is None:
                newline = b"\r\n" if line.endswith(b"\r\n") else b"\n"
                top = f"{RETRIEVED_HEADER}: {retrieved}".encode("ascii") + newline
                out.append(top)
            if line in (b"\r\n", b"\n"):  # the empty line: the rest is the body, as is
                out += [line, buf]
                buf = b""
                yield b"".join(out)
                async for rest in stream:
                    yield rest
                return
            if line[:1] not in (b" ", b"\t"):
                dropping = _field_name(line) in _NOT_PASSED_ON
            if not dropping:
                out.append(line)
        if len(buf) > _HEADER_CAP:
            raise IntegrityError("the original has a header line longer than "
                                 f"{_HEADER_CAP} bytes")
        if out:
            yield b"".join(out)
    # No empty line (a header-only message): what is left is a last, unterminated field.
    tail = (b"" if top is not None
            else f"{RETRIEVED_HEADER}: {retrieved}\r\n".encode("ascii"))
    if buf[:1] not in (b" ", b"\t"):
        dropping = _field_name(buf) in _NOT_PASSED_ON
    yield tail + (b"" if dropping else buf)


def message_stream(*, record: MessageRecord, session: SessionRecord, messages: MessageRepo,
                   blobs: BlobReader, keyring: KeyRing, host: str,
                   now: datetime) -> AsyncIterator[bytes]:
    retrieved = retrieved_value(host, record.message_id, now)
    original = next((o for o in record.objects if o.role == "original"), None)
    if original is not None:
        body = original_message(record=record, obj=original, blobs=blobs, keyring=keyring,
                                retrieved=retrieved)
    else:
        body = build_message(record=record, blobs=blobs, keyring=keyring, retrieved=retrieved)
    if isinstance(messages, GuardedMessageRepo):
        # Like a download: a revocation landing mid-stream stops it (the connection aborts).
        body = RevocationGuard(messages, tenant_id=record.tenant_id,
                               message_id=record.message_id, address=session.address).wrap(body)
    return body
