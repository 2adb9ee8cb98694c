"""Sign-in codes by email through the platform SMTP service (aiosmtplib); the bodies are the
tenant's code templates, or the shipped defaults (``codemail``).

Sent like a notification of the same tenant, so a mailbox's DKIM/DMARC checks pass for the
same reasons (docs/deliverability.md): a tenant with its own DKIM key (``tenants.dkim``, as
ingest's ``PUT /v1/admin/dkim`` stored it) gets its From address and its key's signature;
any other tenant the platform's From and the platform key (``PlatformMailSettings``, the
same variables notify reads). The Message-ID is at the From's domain, the envelope sender is
the platform bounce address (at the tenant's bounce subdomain for a keyed tenant when
``SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN`` is set), and EHLO gives the same name as notify's."""

from __future__ import annotations

import email.policy
import logging
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr

import aiosmtplib

from secmsg.retrieve import codemail
from secmsg.retrieve.ports import PolicyRepo
from secmsg.shared import crypto
from secmsg.shared.dkim import MailIdentity, Sender
from secmsg.shared.errors import DependencyUnavailable, PermanentError
from secmsg.shared.settings import CommonSettings
from secmsg.shared.ssrf import PinnedNameContext

log = logging.getLogger("secmsg.retrieve.codemail")

SUBJECT = "Your sign-in code"


class SmtpCodeMailer:
    def __init__(self, settings: CommonSettings, policies: PolicyRepo,
                 identity: MailIdentity | None = None, keyring: crypto.KeyRing | None = None):
        self._s = settings
        self._policies = policies
        self._identity = identity or MailIdentity(platform_from=settings.smtp_from)
        self._keyring = keyring

    async def identity(self, tenant_id: str) -> Sender:
        """The tenant's own signing identity when it has a usable one, else the platform's
        (``MailIdentity.for_tenant``, as notify chooses)."""
        if self._keyring is None:
            return self._identity.platform()
        return self._identity.for_tenant(tenant_id, await self._policies.dkim(tenant_id),
                                         self._keyring)

    async def _bodies(self, *, tenant_id: str, code: str, tenant_name: str,
                      ttl_minutes: int, purpose: str) -> tuple[str, str]:
        info = await self._policies.policy(tenant_id)
        return await codemail.render(tenant_id=tenant_id, code=code, purpose=purpose,
                                     valid_minutes=ttl_minutes, tenant_name=tenant_name,
                                     footer=info.get("footer"),
                                     disclaimers=list(info.get("disclaimers") or []),
                                     sources=info.get("templates") or {},
                                     logo_url=info.get("logo_url"))

    def build(self, *, to: str, text: str, html: str,
              from_address: str | None = None) -> EmailMessage:
        sender = from_address or self._s.smtp_from
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = to
        msg["Subject"] = SUBJECT
        msg["Message-ID"] = make_msgid(
            domain=parseaddr(sender)[1].rpartition("@")[2].lower() or None)
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
        who = await self.identity(tenant_id)
        msg = self.build(to=to, text=text, html=html, from_address=who.from_address)
        raw = self._identity.sign(msg.as_bytes(policy=email.policy.SMTP), who)
        s = self._s
        # Like the other platform mailers: SECMSG_SMTP_CA_FILE's CAs are trusted besides the
        # system store; the certificate is always verified against SECMSG_SMTP_HOST.
        ctx = (PinnedNameContext.for_host(s.smtp_host, s.smtp_ca_file)
               if s.smtp_tls != "none" and s.smtp_ca_file else None)
        try:
            await aiosmtplib.send(
                raw, sender=who.envelope_from, recipients=[to], hostname=s.smtp_host,
                port=s.smtp_port, username=s.smtp_username, password=s.smtp_password,
                use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls",
                timeout=s.smtp_timeout_s, tls_context=ctx,
                local_hostname=self._identity.ehlo_name)
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise DependencyUnavailable(f"SMTP deferred the code email ({exc.code})") from exc
            raise PermanentError(f"SMTP refused the code email ({exc.code})") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DependencyUnavailable(f"SMTP unavailable ({type(exc).__name__})") from exc
