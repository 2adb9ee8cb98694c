# Over 400 lines: one notification's MIME bytes by hand (headers, bodies, per-recipient copies)
"""Build notification emails -- pure: no I/O, same inputs, same mail (apart from Date and
Message-ID, which are per notification).

Rendered once per ``message.stored`` event (:func:`render_event`): the body, Subject, From,
Reply-To, To/Cc (the original recipients) and markers are the same for every recipient.
:meth:`RenderedEvent.for_recipient` then only validates the envelope recipient and splices in
the two header lines this module owns: ``Date`` and a unique ``Message-ID``.

The body text and HTML come from the tenant's templates (``tenants.templates``) when it has
them, else the shipped defaults -- both rendered by ``secmsg.shared.templating`` (sandbox,
limits). A stored template that nevertheless fails (e.g. real data larger than the sample made
it exceed a limit) is replaced by the default for that event, with a warning. The toolbar
markers are outside the tenant's reach: headers, and the frame (``templating.render_frames``) that
notify puts around the rendered body (marker lines; meta tags, data attributes and the hidden
span in HTML).

Every header value is checked for CR, LF and NUL before anything is built: a value that could
inject a header is refused with ``InvalidInput`` (the notification then fails permanently),
never cleaned up and sent.

The MIME bytes are written here rather than by ``email.message.EmailMessage``, which cost
~1 ms of CPU per notification (header registry classes, re-parsing and refolding every
header, a regex compiled per boundary). Header values that are plain printable ASCII are
written as is -- byte for byte what ``email`` writes for them (tests/notify/test_compose.py
compares the two). Anything else (non-ASCII, ``=?``, long lines, unusual addresses) is folded
by ``email``'s own header classes, so RFC 2047 encoding and folding stay the stdlib's.
Bodies are quoted-printable (RFC 2045, lines <= 76) by ``binascii``; the boundary starts with
``=`` followed by more ``=``, a sequence quoted-printable output can never contain.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderDefect
from email.headerregistry import Address
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from secmsg.notify.bounce_address import bounce_address
from secmsg.notify.ports import TenantBranding
from secmsg.shared import templating
from secmsg.shared.errors import InvalidInput
from secmsg.shared.events import MessageStored
from secmsg.shared.headers import check_header_value
from secmsg.shared.markers import HEADER_ID, HEADER_URL

log = logging.getLogger(__name__)

_FORBIDDEN = ("\r", "\n", "\0")
# Long header values stay on one line (RFC 5322 allows 998): folding a long URL would start
# X-Secure-Message-Url's value with a line break, and toolbars read that value verbatim.
POLICY = SMTP.clone(max_line_length=998)
_MAX_LINE = 998
# Printable ASCII words separated by single spaces: written verbatim by ``email`` too.
_PLAIN = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
# A dot-atom local part and a plain domain: ``Address(addr_spec=...)`` keeps these verbatim.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)\Z")
# RFC 5322 specials: a display name holding any of them is written as a quoted string.
_SPECIALS = frozenset('()<>@,:;."[]')


_TEXT, _HTML = "notification_text", "notification_html"


def _body(kind: str, branding: TenantBranding, context: dict[str, Any],
          limits: templating.Limits) -> str:
    return templating.render_or_default(kind, branding.templates.get(kind), context, log=log,
                                        limits=limits)


def uses_tenant_templates(branding: TenantBranding) -> bool:
    """Whether rendering runs tenant code (then it belongs off the event loop)."""
    return any(k in branding.templates for k in (_TEXT, _HTML))


def _is_plain(value: str) -> bool:
    return _PLAIN.match(value) is not None and "=?" not in value


def _simple_address(value: str) -> Address | None:
    m = _SIMPLE_ADDRESS.match(value)
    if m is None or "=?" in value:
        return None
    return Address(username=m.group(1), domain=m.group(2))


def parse_address(name: str, value: str) -> Address:
    check_header_value(name, value)
    simple = _simple_address(value)
    if simple is not None:
        return simple
    try:
        addr = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderDefect) as exc:
        raise InvalidInput(f"{name} is not a valid email address") from exc
    if not addr.username or not addr.domain:
        raise InvalidInput(f"{name} is not a valid email address")
    return addr


@lru_cache(maxsize=16)
def _platform_address(value: str) -> Address:
    # SECMSG_SMTP_FROM: the same string for every notification.
    return parse_address("platform sender (SECMSG_SMTP_FROM)", value)


def _folded(name: str, value: Any) -> str:
    """``name: value`` exactly as ``EmailMessage`` with ``POLICY`` would write it."""
    folded: str = POLICY.header_factory(name, value).fold(policy=POLICY)
    return folded


def _fits(name: str, value: str) -> bool:
    return len(name) + 2 + len(value) <= _MAX_LINE


def header_line(name: str, value: str) -> str:
    """An unstructured header (Subject, X-...): verbatim if plain ASCII, else ``email``'s."""
    if _is_plain(value) and _fits(name, value):
        return f"{name}: {value}\r\n"
    return _folded(name, value)


def _plain_addr_spec(addr: Address) -> str | None:
    spec = addr.addr_spec
    return spec if _SIMPLE_ADDRESS.match(spec) and "=?" not in spec else None


def address_line(name: str, addresses: list[Address]) -> str:
    """An address header: simple addresses (and plain display names) verbatim, else
    ``email``'s parser and folder (quoting, RFC 2047 display names, folding)."""
    parts: list[str] = []
    for addr in addresses:
        spec = _plain_addr_spec(addr)
        if spec is None:
            return _folded(name, addresses)
        dn = addr.display_name
        if not dn:
            parts.append(spec)
        elif _is_plain(dn) and '"' not in dn and "\\" not in dn:
            parts.append(f'"{dn}" <{spec}>' if not _SPECIALS.isdisjoint(dn) else f"{dn} <{spec}>")
        else:
            return _folded(name, addresses)
    value = ", ".join(parts)
    if not _fits(name, value):
        return _folded(name, addresses)
    return f"{name}: {value}\r\n"


def _qp(text: str) -> bytes:
    """Quoted-printable of ``text`` as UTF-8 with CRLF line ends (lines <= 76, RFC 2045)."""
    lines = text.encode("utf-8").splitlines()
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)


def _boundary() -> bytes:
    # As ``email`` makes them; safe without scanning the parts (module docstring).
    return f"==============={secrets.randbelow(sys.maxsize):019d}==".encode()


def _as_utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# Stands for the recipient hint in the rendered link until each recipient's copy is made: the
# same length as a real hint and made of URL-safe characters, so templates and autoescape
# leave it alone. _HINT_SLOT marks, in the encoded tail, where each copy's bodies go.
HINT_PLACEHOLDER = "0hHINTHINTHINTHINTHINT"
_HINT_SLOT = b"\x00secmsg-body\x00"
_PLACEHOLDER_BYTES = HINT_PLACEHOLDER.encode("ascii")
# Characters quoted-printable writes as themselves wherever they stand (no ``=``, space, dot or
# line end): a hint made of them, as long as the placeholder, takes the placeholder's bytes in
# the encoded body one for one -- the soft line breaks stay where they are.
_QP_LITERAL = re.compile(r"[A-Za-z0-9_-]+\Z")
_SOFT_BREAK = b"=\r\n"
# The placeholder in encoded text, with any soft line breaks the encoder put inside it.
_ENCODED_PLACEHOLDER = re.compile(
    b"(?:=\r\n)?".join(re.escape(bytes([c])) for c in _PLACEHOLDER_BYTES))


@dataclass(frozen=True)
class _SlottedQP:
    """A body encoded once with the placeholder: the bytes around each placeholder, and
    where soft line breaks fell inside it; ``fill(hint)`` is the encoding of the body with
    the hint in place of the placeholder."""

    parts: tuple[bytes, ...]  # one more than ``breaks``
    breaks: tuple[tuple[int, ...], ...]  # per placeholder: offsets of the breaks in it

    @classmethod
    def of(cls, text: str) -> _SlottedQP | None:
        encoded = _qp(text)
        wanted = text.count(HINT_PLACEHOLDER)
        if encoded.count(_PLACEHOLDER_BYTES) == wanted:  # none cut by a line break
            return cls(tuple(encoded.split(_PLACEHOLDER_BYTES)), ((),) * wanted)
        parts: list[bytes] = []
        breaks: list[tuple[int, ...]] = []
        at = 0
        for m in _ENCODED_PLACEHOLDER.finditer(encoded):
            parts.append(encoded[at:m.start()])
            found, offset, chunk = [], 0, m.group()
            for piece in chunk.split(_SOFT_BREAK)[:-1]:
                offset += len(piece)
                found.append(offset)
            breaks.append(tuple(found))
            at = m.end()
        parts.append(encoded[at:])
        if len(breaks) != wanted:
            return None  # not every placeholder came out recognisably: encode per recipient
        return cls(tuple(parts), tuple(breaks))

    def fill(self, hint: bytes) -> bytes:
        out = [self.parts[0]]
        for cuts, after in zip(self.breaks, self.parts[1:], strict=True):
            prev = 0
            for cut in cuts:
                out += (hint[prev:cut], _SOFT_BREAK)
                prev = cut
            out += (hint[prev:], after)
        return b"".join(out)


def _hinted(slotted: _SlottedQP | None, text: str, hint: str) -> bytes:
    """The quoted-printable body of one recipient: the placeholder replaced by ``hint``."""
    if (slotted is not None and len(hint) == len(HINT_PLACEHOLDER)
            and _QP_LITERAL.match(hint) is not None):
        return slotted.fill(hint.encode("ascii"))
    return _qp(text.replace(HINT_PLACEHOLDER, hint))


@dataclass(frozen=True)
class Notification:
    data: bytes
    envelope_from: str
    recipient: str

    def as_bytes(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class RenderedEvent:
    """One event's notification, minus the per-recipient ``Date`` and ``Message-ID`` lines."""

    head: bytes  # From .. Subject
    tail: bytes  # X-Secure-* .. the end of the MIME body
    message_id: str
    domain: str
    envelope_from: str
    tenant_id: str = ""
    # SECMSG_NOTIFY_BOUNCE_ADDRESS: the envelope sender gets a per-recipient tag (VERP).
    bounce_base: str | None = None
    # With a hinter, the body's link names its recipient (``?r=<hint>``, see
    # ``KeyRing.recipient_hint``): ``tail`` then holds ``_HINT_SLOT`` where each recipient's
    # bodies go, rendered with ``HINT_PLACEHOLDER`` in the link.
    hinter: Callable[[str], str] | None = None
    text: str = ""
    html: str = ""
    # ``text``/``html`` encoded once with the placeholder (None: encode per recipient); the
    # per-recipient encoding of the bodies was ~5 % of notify's CPU (docs/cost.md).
    text_qp: _SlottedQP | None = None
    html_qp: _SlottedQP | None = None

    def for_recipient(self, recipient: str, *, now: datetime) -> Notification:
        rcpt = parse_address("recipient", recipient)
        # Deterministic per (message, recipient): if notify dies between the SMTP server's
        # 250 and recording it (the one window left open), the resent copy carries the same
        # Message-ID, which mailbox stores de-duplicate. Distinct for every recipient.
        tag = hashlib.sha256(f"{self.message_id}|{rcpt.addr_spec.lower()}".encode()).hexdigest()
        # Both values are ours: a date, and hex + the checked message id + the checked domain.
        own = (f"Date: {format_datetime(now)}\r\n"
               f"Message-ID: <{tag[:32]}.{self.message_id}@{self.domain}>\r\n")
        envelope_from = self.envelope_from
        if self.bounce_base:
            envelope_from = bounce_address(self.bounce_base, tenant_id=self.tenant_id,
                                           message_id=self.message_id, address=rcpt.addr_spec)
        tail = self.tail
        if self.hinter is not None:
            hint = self.hinter(rcpt.addr_spec)
            before, _, after = tail.partition(_HINT_SLOT)
            middle, _, end = after.partition(_HINT_SLOT)
            tail = b"".join((before, _hinted(self.text_qp, self.text, hint), middle,
                             _hinted(self.html_qp, self.html, hint), end))
        return Notification(data=b"".join((self.head, own.encode("ascii"), tail)),
                            envelope_from=envelope_from, recipient=rcpt.addr_spec)


def render_event(*, event: MessageStored, branding: TenantBranding, platform_from: str,
                 public_url: str, bounce_base: str | None = None,
                 hinter: Callable[[str], str] | None = None,
                 limits: templating.Limits = templating.LIMITS) -> RenderedEvent:
    """What every recipient's notification shares: headers as the sender wrote them, a link,
    no content. Raises ``InvalidInput`` for a value that cannot go into a header.

    Bcc recipients are notified like the others but appear in no header: To and Cc list only
    the sender's To and Cc (a message with neither gets ``To: undisclosed-recipients:;``).
    With a tenant DKIM key carrying a ``from_address`` the From address is that one (aligned
    with the signature's ``d=``), with the same display name."""
    subject = check_header_value("subject", event.subject)
    sender = parse_address("sender", event.sender)
    platform = _platform_address(platform_from)
    display_name = check_header_value("tenant display name", branding.display_name)
    to = [parse_address("to", r.address) for r in event.recipients if r.kind == "to"]
    cc = [parse_address("cc", r.address) for r in event.recipients if r.kind == "cc"]
    url = check_header_value("message url", templating.message_url(public_url, event.tenant_id,
                                                          event.message_id))
    message_id = check_header_value("message id", event.message_id)

    from_addr = platform
    if branding.dkim is not None and branding.dkim.from_address:
        from_addr = parse_address("tenant DKIM from address", branding.dkim.from_address)
        if bounce_base and branding.dkim.bounce_domain:
            # SPF-aligned with the From (alignment.py): the tenant's bounce subdomain.
            bounce_base = f"{bounce_base.rpartition('@')[0]}@{branding.dkim.bounce_domain}"
    # The Message-ID's domain is the From's: the tenant's DKIM domain when it signs.
    domain = check_header_value("sender domain", from_addr.domain)
    if not domain.isascii():
        raise InvalidInput("the sender's domain must be ASCII (it ends each Message-ID)")
    head = [address_line("From", [Address(display_name=f"{sender.addr_spec} via {display_name}",
                                          username=from_addr.username,
                                          domain=from_addr.domain)]),
            address_line("Reply-To", [sender])]
    if to:
        head.append(address_line("To", to))
    elif not cc:
        # Only Bcc recipients: RFC 5322's empty group, so no address is disclosed.
        head.append("To: undisclosed-recipients:;\r\n")
    if cc:
        head.append(address_line("Cc", cc))
    head.append(header_line("Subject", subject))
    if branding.list_unsubscribe:
        # Only when the tenant asked: a one-to-one notification is not a mailing list, and an
        # unsubscribe button on it would invite recipients to turn off mail they need.
        head.append(header_line("List-Unsubscribe", branding.list_unsubscribe))
        if branding.list_unsubscribe_one_click:
            head.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")

    context = templating.notification_context(  # the variables documented in KINDS
        sender=sender.addr_spec, tenant_name=display_name, logo_url=branding.logo_url,
        subject=subject, attachment_count=event.attachment_count,
        expires_at=_as_utc(event.expires_at),
        # per recipient: the link names whom it was sent to (``hinter``), filled in later
        link=f"{url}?r={HINT_PLACEHOLDER}" if hinter is not None else url,
        message_id=message_id, footer=branding.footer, disclaimers=branding.disclaimers,
        disclaimer=event.disclaimer)
    try:
        text_body = _body(_TEXT, branding, context, limits).rstrip("\n") + "\n"
        # The sandbox autoescaped every value; the template's own markup is the tenant's.
        # The frames (shared with ingest's placeholders) add the toolbar markers.
        plain_text, plain_html = templating.render_frames(
            text_body=text_body, html_body=_body(_HTML, branding, context, limits),
            message_id=message_id, url=url, subject=subject)
        if hinter is not None:
            text, html = _HINT_SLOT, _HINT_SLOT  # encoded per recipient, with its hint
        else:
            text, html = _qp(plain_text), _qp(plain_html)
    except UnicodeEncodeError as exc:  # a lone surrogate escaped in the event's JSON
        raise InvalidInput("the notification text is not valid Unicode") from exc
    try:
        head_bytes = "".join(head).encode("ascii")
        markers = (header_line(HEADER_ID, message_id)
                   + header_line(HEADER_URL, url)).encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidInput("a header value is not valid Unicode") from exc
    boundary = _boundary()
    tail = b"".join((
        markers,
        # Notifications are machine-generated: no vacation auto-replies back to the platform.
        b"Auto-Submitted: auto-generated\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="', boundary, b'"\r\n\r\n',
        # Quoted-printable keeps the mail 7-bit clean for servers without 8BITMIME.
        b"--", boundary, b"\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        text,
        b"\r\n--", boundary, b"\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        html,
        b"\r\n--", boundary, b"--\r\n",
    ))
    if bounce_base:
        # Fails here, once, rather than at every recipient, if the ids cannot be tagged.
        try:
            bounce_address(bounce_base, tenant_id=event.tenant_id, message_id=message_id,
                           address="x@x")
        except ValueError as exc:
            raise InvalidInput("the ids cannot be carried in the bounce address") from exc
    text_qp = html_qp = None
    if hinter is not None:
        try:
            if len({r.address.lower() for r in event.recipients}) > 1:
                # Several copies: encode once here (one recipient: its copy encodes it).
                text_qp, html_qp = _SlottedQP.of(plain_text), _SlottedQP.of(plain_html)
            else:
                (plain_text + plain_html).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput("the notification text is not valid Unicode") from exc
    return RenderedEvent(head=head_bytes, tail=tail, message_id=message_id,
                         domain=domain, envelope_from=platform.addr_spec,
                         tenant_id=event.tenant_id, bounce_base=bounce_base, hinter=hinter,
                         text=plain_text if hinter else "", html=plain_html if hinter else "",
                         text_qp=text_qp, html_qp=html_qp)


def build_notification(*, event: MessageStored, recipient: str, branding: TenantBranding,
                       platform_from: str, public_url: str, now: datetime) -> Notification:
    """The notification to one ``recipient`` (one render; the service renders once per event)."""
    return render_event(event=event, branding=branding, platform_from=platform_from,
                        public_url=public_url).for_recipient(recipient, now=now)
