"""Sign-in codes by email through the platform SMTP service (aiosmtplib), Jinja2 templates."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
from jinja2 import Environment

from secmsg.shared.errors import DependencyUnavailable, PermanentError
from secmsg.shared.settings import CommonSettings

SUBJECT = "Your sign-in code"


class SmtpCodeMailer:
    def __init__(self, settings: CommonSettings, templates: Environment):
        self._s = settings
        self._templates = templates

    def build(self, *, to: str, code: str, tenant_name: str, ttl_minutes: int) -> EmailMessage:
        ctx = {"code": code, "tenant_name": tenant_name, "ttl_minutes": ttl_minutes}
        msg = EmailMessage()
        msg["From"] = self._s.smtp_from
        msg["To"] = to
        msg["Subject"] = SUBJECT
        msg["Message-ID"] = make_msgid(domain=self._s.smtp_from.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(self._templates.get_template("code_email.txt").render(ctx))
        msg.add_alternative(self._templates.get_template("code_email.html").render(ctx),
                            subtype="html")
        return msg

    async def send_code(self, *, to: str, code: str, tenant_name: str, ttl_minutes: int) -> None:
        if any(c in to for c in "\r\n\0"):
            raise PermanentError("recipient address contains a line break")
        msg = self.build(to=to, code=code, tenant_name=tenant_name, ttl_minutes=ttl_minutes)
        s = self._s
        try:
            await aiosmtplib.send(
                msg, hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
                password=s.smtp_password, use_tls=s.smtp_tls == "tls",
                start_tls=s.smtp_tls == "starttls", timeout=s.smtp_timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise DependencyUnavailable(f"SMTP deferred the code email ({exc.code})") from exc
            raise PermanentError(f"SMTP refused the code email ({exc.code})") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DependencyUnavailable(f"SMTP unavailable ({type(exc).__name__})") from exc
