"""What the notify logic depends on, as Protocols; adapters/ holds the real implementations.

Errors a ``Mailer`` raises:

    SmtpTemporaryFailure (TransientError)   4xx reply: this notification may be tried again later
    └── SmtpUnavailable                     refused / dropped / timed-out connection
    SmtpPermanentFailure (PermanentError)   5xx reply: trying again would fail the same way
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel

from secmsg.shared.errors import PermanentError, TransientError


class SmtpTemporaryFailure(TransientError):
    code = "smtp_temporary_failure"

    def __init__(self, detail: str, *, reason: str = "temporary_rejection") -> None:
        super().__init__(detail)
        self.reason = reason  # one word of secmsg.shared.smtp_reasons, safe to publish and log


class SmtpUnavailable(SmtpTemporaryFailure):
    """The server could not be reached or went away: other recipients would fare no better."""

    code = "smtp_unavailable"

    def __init__(self, detail: str, *, reason: str = "connection_lost") -> None:
        super().__init__(detail, reason=reason)


class TargetBusy(SmtpUnavailable):
    """Every connection to the target is taken (or its rate is used up) and the wait would be
    long: raised before anything was claimed or sent, so the event can simply come back in
    ``retry_in`` seconds without holding a handler meanwhile."""

    code = "smtp_target_busy"

    def __init__(self, detail: str, *, retry_in: float) -> None:
        super().__init__(detail, reason="timeout")
        self.retry_in = retry_in


class SmtpPermanentFailure(PermanentError):
    code = "smtp_permanent_failure"

    def __init__(self, detail: str, *, reason: str = "permanent_rejection") -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class SmtpTarget:
    """One SMTP service to send through: the platform's today, a tenant's own later."""

    host: str
    port: int
    tls: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    # A tenant's own server: resolved and SSRF-checked at every connect, the connection goes
    # to the checked address and the host name is kept for TLS (SNI, certificate check).
    checked: bool = False
    allowed_targets: str = ""
    ca_file: str | None = None
    # A tenant's own lower limit (``tenants.smtp.rate_per_s``); None: the worker's default.
    rate_per_s: float | None = None

    @property
    def pool_key(self) -> tuple[str, int, str, str | None]:
        # The password is not part of the key: a rotated password for the same account must
        # not leave a second pool of connections behind.
        return (self.host, self.port, self.tls, self.username)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class Lane(Protocol):
    """One reserved place in a target's send queue (a connection slot and a rate token)."""

    async def send(self, *, envelope_from: str, recipient: str, message: bytes) -> None:
        """Deliver ``message`` to exactly one envelope recipient; raise on failure."""
        ...


class Mailer(Protocol):
    def precheck(self, target: SmtpTarget) -> None:
        """Raise ``TargetBusy`` at once if ``target`` is known to be down or stalled."""
        ...

    def reserve(self, target: SmtpTarget) -> AbstractAsyncContextManager[Lane]:
        """A lane to ``target``; raises ``TargetBusy`` at entry instead of waiting long."""
        ...

    async def send(self, target: SmtpTarget, *, envelope_from: str, recipient: str,
                   message: bytes) -> None:
        """``reserve`` + ``Lane.send`` in one."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to take one recipient's notification.

    ``claimed``: ours to send now (``attempts`` counts this try). ``final``: already ``sent``
    or ``failed``. ``busy``: another worker holds a live lease until ``lease_until``.
    """

    outcome: Literal["claimed", "final", "busy"]
    state: str
    attempts: int
    lease_until: datetime | None = None
    reason: str | None = None
    smtp_target: str | None = None


class DeliveryRepo(Protocol):
    async def claim(self, key: str, *, now: datetime, lease_until: datetime) -> Claim: ...

    async def mark_sent(self, key: str, *, now: datetime, smtp_target: str) -> None: ...

    async def mark_deferred(self, key: str, *, now: datetime, reason: str,
                            retry_at: datetime) -> None: ...

    async def mark_failed(self, key: str, *, now: datetime, reason: str) -> None: ...

    def release(self, key: str) -> None:
        """This process no longer works on ``key`` (called after every claimed attempt)."""
        ...


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)
    # The notification's From address when this key signs (aligned with ``domain``).
    from_address: str | None = None
    # The envelope sender's domain when this key signs (``alignment.tenant_bounce_domain``);
    # None: the platform's bounce address.
    bounce_domain: str | None = None


class Signer(Protocol):
    def sign(self, message: bytes, key: DkimKey) -> bytes:
        """``message`` with a DKIM-Signature header line in front."""
        ...


class UndeliverableList(Protocol):
    async def blocked(self, tenant_id: str, addresses: Sequence[str]) -> set[str]:
        """The lower-cased addresses among ``addresses`` that hard-bounced for this tenant."""
        ...


class RelayChooser(Protocol):
    async def platform_target(self) -> SmtpTarget:
        """The platform's SMTP service now: the primary relay or, when switched, the standby."""
        ...


@dataclass(frozen=True)
class TenantBranding:
    tenant_id: str
    display_name: str
    footer: str | None = None
    disclaimers: tuple[str, ...] = ()
    # Tenant-edited template sources by kind (``secmsg.shared.templating.KINDS``); a kind
    # absent here uses the shipped default. Stored sources were validated at save.
    templates: Mapping[str, str] = field(default_factory=dict)
    # The tenant's own SMTP server (``tenants.smtp`` mode "own"); None: the platform's.
    smtp: SmtpTarget | None = None
    # The tenant's DKIM key (``tenants.dkim``); None: the platform signs, From is the platform's.
    dkim: DkimKey | None = None
    logo_url: str | None = None  # ``tenants.branding.logo_url`` (https: or data:image)
    # ``List-Unsubscribe`` value (``<https://...>, <mailto:...>``) when the tenant asked for
    # one (``tenants.list_unsubscribe``); None: not added (one-to-one transactional mail).
    list_unsubscribe: str | None = None
    # RFC 8058 one-click (``List-Unsubscribe-Post``): only with an https URL.
    list_unsubscribe_one_click: bool = False


class TenantDirectory(Protocol):
    async def branding(self, tenant_id: str) -> TenantBranding: ...


class Publisher(Protocol):
    async def publish(self, event: BaseModel, msg_id: str) -> bool: ...
