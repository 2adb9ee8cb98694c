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
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr

import aiosmtplib

from secmsg.retrieve import codemail
from secmsg.retrieve.ports import PolicyRepo
from secmsg.shared import crypto
from secmsg.shared.dkim import (
    DkimKey,
    DkimSigner,
    PlatformKey,
    PlatformMailSettings,
    default_ehlo_name,
    platform_key,
)
from secmsg.shared.errors import DependencyUnavailable, PermanentError, SecmsgError
from secmsg.shared.settings import CommonSettings
from secmsg.shared.ssrf import PinnedNameContext

log = logging.getLogger("secmsg.retrieve.codemail")

SUBJECT = "Your sign-in code"


@dataclass(frozen=True)
class Identity:
    """Who a code mail is from: the From address, the key that signs it (None: unsigned)
    and the envelope sender."""

    from_address: str
    key: DkimKey | None
    envelope_from: str


@dataclass
class MailIdentity:
    """The platform's mail identity (``PlatformMailSettings``), read and checked once."""

    platform_from: str
    key: PlatformKey | None = None
    bounce_address: str | None = None
    tenant_bounce_subdomain: str | None = None
    ehlo_name: str | None = None
    signer: DkimSigner = field(default_factory=DkimSigner)

    @classmethod
    def from_settings(cls, common: CommonSettings,
                      mail: PlatformMailSettings | None = None) -> MailIdentity:
        mail = mail or PlatformMailSettings()
        key = platform_key(mail)  # a broken key stops the start, not every code mail
        if key is None:
            log.warning("no platform DKIM key (SECMSG_NOTIFY_DKIM_DOMAIN/_SELECTOR/"
                        "_PRIVATE_KEY_FILE): sign-in code mails go out unsigned",
                        extra={"event": "startup"})
        ehlo = mail.ehlo_name or default_ehlo_name(common.smtp_from)
        return cls(platform_from=common.smtp_from, key=key,
                   bounce_address=mail.bounce_address or None,
                   tenant_bounce_subdomain=mail.tenant_bounce_subdomain or None,
                   ehlo_name=ehlo)

    def platform(self) -> Identity:
        return Identity(self.platform_from, self.key, self.bounce_address or self.platform_from)

    def tenant(self, key: DkimKey, from_address: str) -> Identity:
        envelope = self.bounce_address or from_address
        if self.bounce_address and self.tenant_bounce_subdomain:
            local = self.bounce_address.rpartition("@")[0]
            envelope = f"{local}@{self.tenant_bounce_subdomain.strip('.').lower()}.{key.domain}"
        return Identity(from_address, key, envelope)


@dataclass(frozen=True)
class _TenantKey:
    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)


class SmtpCodeMailer:
    def __init__(self, settings: CommonSettings, policies: PolicyRepo,
                 identity: MailIdentity | None = None, keyring: crypto.KeyRing | None = None):
        self._s = settings
        self._policies = policies
        self._identity = identity or MailIdentity(platform_from=settings.smtp_from)
        self._keyring = keyring

    async def identity(self, tenant_id: str) -> Identity:
        """The tenant's own signing identity when it has a usable one, else the platform's
        (a key that does not open falls back to the platform's, as in notify)."""
        value = await self._policies.dkim(tenant_id) if self._keyring is not None else None
        if not value or self._keyring is None:
            return self._identity.platform()
        domain, selector = value.get("domain"), value.get("selector")
        sealed, from_address = value.get("private_key_sealed"), value.get("from_address")
        if not (isinstance(domain, str) and domain and isinstance(selector, str) and selector
                and isinstance(sealed, str) and isinstance(from_address, str)
                and parseaddr(from_address)[1].rpartition("@")[2].lower() == domain.lower()):
            return self._identity.platform()
        try:
            pem = self._keyring.open_secret(tenant_id, crypto.DKIM_KEY_PURPOSE, sealed)
        except (SecmsgError, ValueError):
            log.warning("tenant DKIM key does not open", extra={"tenant_id": tenant_id})
            return self._identity.platform()
        key = _TenantKey(domain.lower(), selector, pem.encode())
        return self._identity.tenant(key, from_address)

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
        raw = msg.as_bytes(policy=email.policy.SMTP)
        if who.key is not None:
            raw = self._identity.signer.sign(raw, who.key)
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
