"""``SmtpProbe``: one short test message through aiosmtplib, the outcome as a fixed category.

Connects to the address the SSRF guard already checked (never to the name again); TLS still
verifies the certificate against -- and sends SNI for -- the configured host name. Nothing the
server says is passed on: a banner or a reply text could leak the inside of a network or turn
the test into a port scanner, so every outcome is one word of ``docs/design.md``'s list.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPNotSupported,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from secmsg.ingest.ports import SmtpProbeTarget


class _NameContext(ssl.SSLContext):
    """Verifies (and sends SNI for) the configured host name whatever address the connection
    was opened to: aiosmtplib passes its ``hostname`` -- the checked IP -- as the server name."""

    pinned_name: str | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,  # type: ignore[override]
                 server_side: bool = False, server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side,
                                self.pinned_name or server_hostname, session)


def _context(name: str, cafile: str | None) -> _NameContext:
    ctx = _NameContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on, CERT_REQUIRED
    ctx.load_default_certs()
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    ctx.pinned_name = name
    return ctx


def _tls_cause(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify(exc: BaseException) -> str:
    if _tls_cause(exc):
        return "tls_failed"
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, SMTPAuthenticationError):
        return "auth_failed"
    if isinstance(exc, SMTPResponseException):
        return "temporary_rejection" if 400 <= exc.code < 500 else "permanent_rejection"
    if isinstance(exc, SMTPServerDisconnected):
        return "connection_lost"
    if isinstance(exc, SMTPConnectError | ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionError | OSError):
        return "connection_lost"
    return "invalid_message"


class SmtpProbe:
    async def send(self, target: SmtpProbeTarget, message: EmailMessage, *, mail_from: str,
                   to: str) -> str | None:
        """None when the server accepted the message, else the reason category."""
        ctx = _context(target.host, target.ca_file) if target.tls != "none" else None
        smtp = aiosmtplib.SMTP(hostname=target.address, port=target.port,
                               use_tls=target.tls == "tls", start_tls=False, tls_context=ctx,
                               timeout=target.timeout_s)
        try:
            await smtp.connect()
            await smtp.ehlo()  # start_tls=False: connect() does not greet on its own
            if target.tls == "starttls":
                if not smtp.supports_extension("starttls"):
                    return "tls_unavailable"
                await smtp.starttls(tls_context=ctx)
            if target.username:
                try:
                    await smtp.login(target.username, target.password or "")
                except SMTPAuthenticationError:
                    return "auth_failed"
                except (SMTPServerDisconnected, SMTPTimeoutError):
                    raise
                except SMTPException:
                    return "auth_failed"  # no mechanism we can use, or AUTH not offered
            await smtp.send_message(message, sender=mail_from, recipients=[to])
            return None
        except SMTPNotSupported:
            return "tls_unavailable"
        except (SMTPException, OSError, TimeoutError) as exc:
            return classify(exc)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (SMTPException, OSError, TimeoutError):
                    smtp.close()
