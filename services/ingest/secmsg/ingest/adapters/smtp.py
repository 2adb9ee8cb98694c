"""``SmtpProbe``: one short test message through aiosmtplib, the outcome as a fixed category.

Connects to the address the SSRF guard already checked (never to the name again); TLS still
verifies the certificate against -- and sends SNI for -- the configured host name. Nothing the
server says is passed on: a banner or a reply text could leak the inside of a network or turn
the test into a port scanner, so every outcome is one word of ``docs/design.md``'s list.
"""

from __future__ import annotations

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPNotSupported,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from secmsg.ingest.ports import SmtpProbeTarget
from secmsg.shared.smtp_reasons import classify
from secmsg.shared.ssrf import PinnedNameContext


class SmtpProbe:
    async def send(self, target: SmtpProbeTarget, message: bytes, *, mail_from: str,
                   to: str) -> str | None:
        """None when the server accepted the message, else the reason category."""
        ctx = (PinnedNameContext.for_host(target.host, target.ca_file)
               if target.tls != "none" else None)
        smtp = aiosmtplib.SMTP(hostname=target.address, port=target.port,
                               use_tls=target.tls == "tls", start_tls=False, tls_context=ctx,
                               timeout=target.timeout_s,
                               local_hostname=target.local_hostname)
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
            await smtp.sendmail(mail_from, [to], message)
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
