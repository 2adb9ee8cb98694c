"""``POST /v1/admin/smtp/test``: send one short message (no content, no link) through the
tenant's selected SMTP service and answer with a fixed category. The message is signed and
aligned like the tenant's notifications (``secmsg.shared.dkim.MailIdentity``: its own From
and key when it has one, else the platform's; the bounce address as envelope sender; the
platform's EHLO name), so what the test shows is what notifications will meet.

A tenant's own server passes the SSRF guard first (resolved once, the checked address is the
one connected to). Rate limit: ``SECMSG_INGEST_SMTP_TEST_PER_MINUTE`` tests per tenant per
minute *per ingest instance* (in memory: the point is to stop one admin from hammering a host
through us, and N replicas multiply a small number into another small number).
"""

from __future__ import annotations

import email.policy
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from secmsg.ingest.admin_access import check_email
from secmsg.ingest.ports import AccessRepo, Credentials, SmtpProber, SmtpProbeTarget
from secmsg.ingest.tenant_smtp import SECRET_PURPOSE, SmtpConfigStore
from secmsg.shared.crypto import KeyRing
from secmsg.shared.dkim import MailIdentity, Sender
from secmsg.shared.errors import TooManyRequests
from secmsg.shared.ssrf import TargetRefused, TargetUnresolvable, resolve_checked


@dataclass
class RateLimiter:
    per_minute: int
    _hits: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def take(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        hits = self._hits[key]
        while hits and hits[0] <= now - 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            raise TooManyRequests(f"at most {self.per_minute} SMTP tests a minute; retry "
                                  "shortly")
        hits.append(now)


@dataclass(frozen=True)
class PlatformSmtp:
    host: str
    port: int
    tls: str
    username: str | None
    password: str | None
    mail_from: str
    timeout_s: float
    ca_file: str | None
    allowed_targets: str
    identity: MailIdentity | None = None  # None: unsigned, From and MAIL FROM ``mail_from``


SUBJECT = "secmsg SMTP test"


def _message(*, tenant_name: str, mail_from: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = SUBJECT
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=mail_from.rsplit("@", 1)[-1].lower())
    msg.set_content(f"This is a test of the notification settings of {tenant_name}. "
                    "No action is needed.\n")
    return msg


async def run(*, creds: Credentials, to: str, store: SmtpConfigStore, key_ring: KeyRing,
              platform: PlatformSmtp, prober: SmtpProber, limiter: RateLimiter,
              access: AccessRepo) -> tuple[str, str | None]:
    """Returns (mode, reason): reason None when the server accepted the message."""
    to = check_email(to, "to")
    tenant = creds.tenant
    limiter.take(tenant.tenant_id)
    config = await store.load(tenant.tenant_id)
    identity = platform.identity
    if identity is None:
        sender = Sender(platform.mail_from, None, platform.mail_from)
    else:
        sender = identity.for_tenant(tenant.tenant_id,
                                     (await access.tenant(tenant.tenant_id)).get("dkim"),
                                     key_ring)
    mail_from = sender.envelope_from
    message = _message(tenant_name=tenant.name, mail_from=sender.from_address, to=to)
    raw = message.as_bytes(policy=email.policy.SMTP)
    if identity is not None:
        raw = identity.sign(raw, sender)
    ehlo = identity.ehlo_name if identity is not None else None
    if config.mode != "own" or not config.host or not config.port or not config.tls:
        target = SmtpProbeTarget(
            address=platform.host, host=platform.host, port=platform.port, tls=platform.tls,
            username=platform.username, password=platform.password,
            timeout_s=platform.timeout_s, ca_file=platform.ca_file, local_hostname=ehlo)
        return "platform", await prober.send(target, raw, mail_from=mail_from, to=to)
    try:
        addresses = await resolve_checked(config.host, config.port,
                                          allow=platform.allowed_targets)
    except TargetRefused:
        return "own", "blocked_target"
    except TargetUnresolvable:
        return "own", "connection_refused"
    password = (key_ring.open_secret(tenant.tenant_id, SECRET_PURPOSE, config.password_sealed)
                if config.password_sealed else None)
    target = SmtpProbeTarget(
        address=str(addresses[0]), host=config.host, port=config.port, tls=config.tls,
        username=config.username, password=password, timeout_s=platform.timeout_s,
        ca_file=platform.ca_file, local_hostname=ehlo)
    return "own", await prober.send(target, raw, mail_from=mail_from, to=to)
