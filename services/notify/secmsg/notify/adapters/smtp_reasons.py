"""Which delivery reason (``secmsg.notify.reasons``) an SMTP or network exception means.

The one place that decides it, so the worker, its logs and metrics, and the admin SMTP test
(ingest, same words) agree. Only the exception's type, reply code and our own messages are
looked at; nothing the server wrote is ever returned.
"""

from __future__ import annotations

import ssl

from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from secmsg.notify import reasons
from secmsg.shared.ssrf import TargetRefused, TargetUnresolvable


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
            return reasons.BLOCKED_TARGET
        if isinstance(e, TargetUnresolvable):
            # No word of its own: to the sender, a name that does not resolve is a server
            # that cannot be reached.
            return reasons.CONNECTION_REFUSED
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return reasons.TLS_FAILED
        if isinstance(e, SMTPAuthenticationError):
            return reasons.AUTH_FAILED
        if isinstance(e, SMTPResponseException):
            if 400 <= e.code < 500:
                return reasons.TEMPORARY_REJECTION
            if e.code >= 500:
                return reasons.PERMANENT_REJECTION
            return reasons.TEMPORARY_REJECTION
        if isinstance(e, SMTPConnectTimeoutError | SMTPTimeoutError | TimeoutError):
            return reasons.TIMEOUT
        if isinstance(e, SMTPConnectError | ConnectionRefusedError):
            return reasons.CONNECTION_REFUSED
        if isinstance(e, SMTPServerDisconnected | ConnectionError | EOFError):
            return reasons.CONNECTION_LOST
        if isinstance(e, SMTPException):
            text = str(e).lower()
            # aiosmtplib's own wording (not the server's) for these two.
            if "starttls" in text and "not supported" in text:
                return reasons.TLS_UNAVAILABLE
            if "auth" in text:
                return reasons.AUTH_FAILED
            return reasons.CONNECTION_LOST
        if isinstance(e, OSError):
            return reasons.CONNECTION_REFUSED
    return reasons.CONNECTION_LOST
