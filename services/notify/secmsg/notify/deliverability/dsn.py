"""Reading delivery status notifications (RFC 3464) with the stdlib ``email`` package.

Only what matching needs is kept: per recipient the reported addresses, the action and the
status code, plus the secmsg markers of the quoted original (its ``X-Secure-Message-Id``,
``X-Secure-Message-Url`` and ``Message-ID``) for reports that lost the VERP tag. Diagnostic
text is never kept: it is the remote server's words and may quote anything.
"""

from __future__ import annotations

import base64
import email
import email.parser
import email.policy
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message

from secmsg.shared import markers

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_QUOTED_ORIGINAL = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


class MalformedReport(ValueError):
    """Claims to be a delivery status report but has no usable per-recipient part."""


@dataclass(frozen=True)
class RecipientStatus:
    final_recipient: str | None
    original_recipient: str | None
    action: str  # lower-cased: failed, delayed, delivered, relayed, expanded
    status: str | None  # "5.1.1", or None when absent or not a status code

    @property
    def addresses(self) -> list[str]:
        """Lower-cased reported addresses, the original first (it is what notify sent to)."""
        return [a for a in (self.original_recipient, self.final_recipient) if a]


@dataclass(frozen=True)
class Quoted:
    """Markers of the notification the report quotes (all optional)."""

    secure_message_id: str | None = None
    secure_message_url: str | None = None
    message_id_header: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    recipients: list[RecipientStatus]
    quoted: Quoted = field(default_factory=Quoted)


def _address(value: str | None) -> str | None:
    """``rfc822; <Bob@Example.org>`` -> ``bob@example.org`` (None if it holds no address)."""
    if not value:
        return None
    _, _, addr = str(value).rpartition(";")
    addr = addr.strip().strip("<>").strip().lower()
    if "@" not in addr or any(c.isspace() for c in addr) or len(addr) > 320:
        return None
    return addr


def _status(value: str | None) -> str | None:
    if not value:
        return None
    first = str(value).strip().split()
    if not first:
        return None
    return first[0] if _STATUS.match(first[0]) else None


def _field_blocks(part: Message) -> list[Message]:
    """The blank-line separated field groups of a ``message/delivery-status`` part."""
    payload = part.get_payload()
    cte = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    if isinstance(payload, list) and cte not in ("base64", "quoted-printable"):
        return [p for p in payload if isinstance(p, Message)]  # split by the parser already
    # Encoded: the parser split the undecoded text; put it back together and decode it here.
    body = ("\n".join(p.as_string() for p in payload if isinstance(p, Message))
            if isinstance(payload, list) else str(payload))
    try:
        raw = (base64.b64decode(body) if cte == "base64"
               else quopri.decodestring(body.encode("ascii", "replace")))
    except ValueError:
        return []
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    parser = email.parser.HeaderParser()
    return [parser.parsestr(block.strip() + "\n") for block in re.split(r"\n\s*\n", text)
            if block.strip()]


def _quoted(msg: Message) -> Quoted:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in _QUOTED_ORIGINAL:
            continue
        if ctype == "message/rfc822":
            inner = part.get_payload()
            headers = inner[0] if isinstance(inner, list) and inner else None
        else:
            raw = part.get_payload(decode=True)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            headers = email.parser.HeaderParser().parsestr(text)
        if not isinstance(headers, Message):
            continue

        def one(name: str, source: Message = headers) -> str | None:
            value = source.get(name)
            return str(value).strip() if value else None

        return Quoted(secure_message_id=one(markers.HEADER_ID),
                      secure_message_url=one(markers.HEADER_URL),
                      message_id_header=one("Message-ID"))
    return Quoted()


def parse_report(raw: bytes) -> DeliveryReport | None:
    """The delivery report in ``raw``, or None when it is not one (a reply, an auto-reply,
    an old-style bounce without ``message/delivery-status``).

    Raises ``MalformedReport`` for a delivery-status part without a recipient block.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    status_part = next((p for p in msg.walk()
                        if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        return None
    recipients = []
    for block in _field_blocks(status_part):
        final = _address(block.get("Final-Recipient"))
        original = _address(block.get("Original-Recipient"))
        action = str(block.get("Action") or "").strip().lower()
        if not (final or original) or not action:
            continue  # the per-message block (Reporting-MTA ...) or a broken one
        recipients.append(RecipientStatus(final_recipient=final, original_recipient=original,
                                          action=action.split()[0],
                                          status=_status(block.get("Status"))))
    if not recipients:
        raise MalformedReport("delivery-status part without a recipient block")
    return DeliveryReport(recipients=recipients, quoted=_quoted(msg))
