"""Build the notification email for one recipient -- pure: no I/O, same inputs, same mail
(apart from Message-ID, which is unique per notification).

Every header value is checked for CR, LF and NUL before anything is built: a value that could
inject a header is refused with ``InvalidInput`` (the notification then fails permanently),
never cleaned up and sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from secmsg.notify.ports import TenantBranding
from secmsg.shared.errors import InvalidInput
from secmsg.shared.events import MessageStored

_FORBIDDEN = ("\r", "\n", "\0")
# Long header values stay on one line (RFC 5322 allows 998): folding a long URL would start
# X-Secure-Message-Url's value with a line break, and toolbars read that value verbatim.
POLICY = SMTP.clone(max_line_length=998)


@cache
def _templates() -> Environment:
    # Only the HTML alternative is escaped; the text one must show "<" and "&" as written.
    return Environment(
        loader=PackageLoader("secmsg.notify", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def message_url(public_url: str, tenant_id: str, message_id: str) -> str:
    return f"{public_url.rstrip('/')}/m/{tenant_id}/{message_id}"


def check_header_value(name: str, value: str) -> str:
    if any(c in value for c in _FORBIDDEN):
        raise InvalidInput(f"{name} contains a line break or NUL; refusing to build the header")
    return value


def parse_address(name: str, value: str) -> Address:
    check_header_value(name, value)
    try:
        addr = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderDefect) as exc:
        raise InvalidInput(f"{name} is not a valid email address") from exc
    if not addr.username or not addr.domain:
        raise InvalidInput(f"{name} is not a valid email address")
    return addr


def _as_utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(frozen=True)
class Notification:
    message: EmailMessage
    envelope_from: str
    recipient: str

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=POLICY)


def build_notification(*, event: MessageStored, recipient: str, branding: TenantBranding,
                       platform_from: str, public_url: str, now: datetime) -> Notification:
    """The notification to ``recipient``: headers as the sender wrote them, a link, no content."""
    subject = check_header_value("subject", event.subject)
    sender = parse_address("sender", event.sender)
    platform = parse_address("platform sender (SECMSG_SMTP_FROM)", platform_from)
    rcpt = parse_address("recipient", recipient)
    display_name = check_header_value("tenant display name", branding.display_name)
    to = [parse_address("to", r.address) for r in event.recipients if r.kind == "to"]
    cc = [parse_address("cc", r.address) for r in event.recipients if r.kind == "cc"]
    url = check_header_value("message url", message_url(public_url, event.tenant_id,
                                                          event.message_id))
    message_id = check_header_value("message id", event.message_id)

    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=f"{sender.addr_spec} via {display_name}",
                          username=platform.username, domain=platform.domain)
    msg["Reply-To"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}.{message_id}@{platform.domain}>"
    msg["X-Secure-Message-Id"] = message_id
    msg["X-Secure-Message-Url"] = url
    # Notifications are machine-generated: no vacation auto-replies back to the platform.
    msg["Auto-Submitted"] = "auto-generated"

    context = {
        "sender": sender.addr_spec,
        "tenant_name": display_name,
        "subject": subject,
        "attachment_count": event.attachment_count,
        "expires_at": _as_utc(event.expires_at),
        "url": url,
        "message_id": message_id,
        "tenant_id": event.tenant_id,
        "footer": branding.footer,
        "disclaimers": list(branding.disclaimers),
        "disclaimer": event.disclaimer,
        "recipient": rcpt.addr_spec,
    }
    env = _templates()
    # Quoted-printable keeps the mail 7-bit clean for servers without 8BITMIME.
    msg.set_content(env.get_template("notification.txt.j2").render(context),
                    cte="quoted-printable")
    msg.add_alternative(env.get_template("notification.html.j2").render(context),
                        subtype="html", cte="quoted-printable")
    return Notification(message=msg, envelope_from=platform.addr_spec, recipient=rcpt.addr_spec)
