"""The fixed vocabulary of delivery reasons (docs/design.md "Deliverability") and which word an
SMTP or network exception means.

Every ``NotificationDeferred/Failed.reason``, claim ``reason``, log line and metric label about
a delivery, and every answer of ingest's SMTP test action, uses one of these words, never a
remote server's text: a reply could echo a banner, an address or whatever a hostile server
wants in our logs and the sender's view, and echoing it would turn the test action into a port
scanner. ``classify`` is the one place that maps an exception to a word (it looks only at the
exception's type, reply code and aiosmtplib's own messages).
"""

from __future__ import annotations

import ssl
from typing import Final, Literal

from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from secmsg.shared.ssrf import TargetRefused, TargetUnresolvable

Reason = Literal[
    "connection_refused", "connection_lost", "timeout", "tls_unavailable", "tls_failed",
    "auth_failed", "temporary_rejection", "permanent_rejection", "blocked_target",
    "invalid_message", "undeliverable", "gave_up", "bounced_hard", "bounced_soft",
]

CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION_LOST: Final = "connection_lost"
TIMEOUT: Final = "timeout"
TLS_UNAVAILABLE: Final = "tls_unavailable"
TLS_FAILED: Final = "tls_failed"
AUTH_FAILED: Final = "auth_failed"
TEMPORARY_REJECTION: Final = "temporary_rejection"
PERMANENT_REJECTION: Final = "permanent_rejection"
BLOCKED_TARGET: Final = "blocked_target"
INVALID_MESSAGE: Final = "invalid_message"
UNDELIVERABLE: Final = "undeliverable"
GAVE_UP: Final = "gave_up"

REASONS: Final[frozenset[str]] = frozenset(Reason.__args__)  # type: ignore[attr-defined]


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify(exc: BaseException) -> str:
    """The reason word for ``exc`` (walking its ``__cause__`` chain)."""
    for e in _chain(exc):
        if isinstance(e, TargetRefused):
            return BLOCKED_TARGET
        if isinstance(e, TargetUnresolvable):
            # No word of its own: to the sender, a name that does not resolve is a server
            # that cannot be reached.
            return CONNECTION_REFUSED
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return TLS_FAILED
        if isinstance(e, SMTPAuthenticationError):
            return AUTH_FAILED
        if isinstance(e, SMTPResponseException):
            if 400 <= e.code < 500:
                return TEMPORARY_REJECTION
            if e.code >= 500:
                return PERMANENT_REJECTION
            return TEMPORARY_REJECTION
        if isinstance(e, SMTPConnectTimeoutError | SMTPTimeoutError | TimeoutError):
            return TIMEOUT
        if isinstance(e, SMTPConnectError | ConnectionRefusedError):
            return CONNECTION_REFUSED
        if isinstance(e, SMTPServerDisconnected | ConnectionError | EOFError):
            return CONNECTION_LOST
        if isinstance(e, SMTPException):
            text = str(e).lower()
            # aiosmtplib's own wording (not the server's) for these two.
            if "starttls" in text and "not supported" in text:
                return TLS_UNAVAILABLE
            if "auth" in text:
                return AUTH_FAILED
            return CONNECTION_LOST
        if isinstance(e, OSError):
            return CONNECTION_REFUSED
    return CONNECTION_LOST
