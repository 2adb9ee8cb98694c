"""Sign-in codes by email through the platform SMTP service (aiosmtplib); the bodies are the
tenant's code templates, or the shipped defaults (``codemail``)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from secmsg.retrieve import codemail
from secmsg.retrieve.ports import PolicyRepo
from secmsg.shared.errors import DependencyUnavailable, PermanentError
from secmsg.shared.settings import CommonSettings
from secmsg.shared.ssrf import PinnedNameContext

SUBJECT = "Your sign-in code"


class SmtpCodeMailer:
    def __init__(self, settings: CommonSettings, policies: PolicyRepo):
        self._s = settings
        self._policies = policies

    async def _bodies(self, *, tenant_id: str, code: str, tenant_name: str,
                      ttl_minutes: int, purpose: str) -> tuple[str, str]:
        info = await self._policies.policy(tenant_id)
        return await codemail.render(tenant_id=tenant_id, code=code, purpose=purpose,
                                     valid_minutes=ttl_minutes, tenant_name=tenant_name,
                                     footer=info.get("footer"),
                                     disclaimers=list(info.get("disclaimers") or []),
                                     sources=info.get("templates") or {},
                                     logo_url=info.get("logo_url"))

    def build(self, *, to: str, text: str, html: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._s.smtp_from
        msg["To"] = to
        msg["Subject"] = SUBJECT
        msg["Message-ID"] = make_msgid(domain=self._s.smtp_from.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg

    async def send_code(self, *, to: str, code: str, tenant_name: str, ttl_minutes: int,
                        tenant_id: str, purpose: str = "signin") -> None:
        if any(c in to for c in "\r\n\0"):
            raise PermanentError("recipient address contains a line break")
        text, html = await self._bodies(tenant_id=tenant_id, code=code,
                                        tenant_name=tenant_name, ttl_minutes=ttl_minutes,
                                        purpose=purpose)
        msg = self.build(to=to, text=text, html=html)
        s = self._s
        # Like the other platform mailers: SECMSG_SMTP_CA_FILE's CAs are trusted besides the
        # system store; the certificate is always verified against SECMSG_SMTP_HOST.
        ctx = (PinnedNameContext.for_host(s.smtp_host, s.smtp_ca_file)
               if s.smtp_tls != "none" and s.smtp_ca_file else None)
        try:
            await aiosmtplib.send(
                msg, hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
                password=s.smtp_password, use_tls=s.smtp_tls == "tls",
                start_tls=s.smtp_tls == "starttls", timeout=s.smtp_timeout_s,
                tls_context=ctx)
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise DependencyUnavailable(f"SMTP deferred the code email ({exc.code})") from exc
            raise PermanentError(f"SMTP refused the code email ({exc.code})") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DependencyUnavailable(f"SMTP unavailable ({type(exc).__name__})") from exc
