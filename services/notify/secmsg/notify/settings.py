"""notify's own settings, read from ``SECMSG_NOTIFY_*`` (shared ones come from CommonSettings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from secmsg.shared.dkim import PlatformMailSettings
from secmsg.shared.settings import ProbePort, ProbeSettings


class NotifySettings(ProbeSettings, PlatformMailSettings):
    """Besides its own, the platform's mail identity (DKIM key, bounce address, EHLO name:
    ``PlatformMailSettings``, which retrieve reads too)."""

    model_config = SettingsConfigDict(env_prefix="SECMSG_NOTIFY_", extra="ignore")

    internal_port: ProbePort = 8082

    concurrency: int = Field(default=16, ge=1, description="events in flight per replica")
    lease_s: float = Field(
        default=120.0, gt=0,
        description="how long a claim on one recipient stays exclusive; must exceed the "
                    "worst-case SMTP send (SECMSG_SMTP_TIMEOUT_S)")
    ack_wait_s: float = Field(
        default=6.0, gt=0,
        description="JetStream redelivers an event not acked within this time (after a crash: "
                    "keep it short); a live handler reports progress every quarter of it")
    owner_ttl_s: float = Field(
        default=5.0, gt=0,
        description="a notify process's heartbeat key lives this long (rewritten every "
                    "quarter): a killed replica's claims are taken over after at most this")
    retry_base_s: float = Field(
        default=30.0, gt=0, description="first back-off of a deferred notification; doubles "
                                        "per attempt up to RETRY_MAX_S")
    retry_max_s: float = Field(default=3600.0, gt=0)
    give_up_after_s: float = Field(
        default=432000.0, ge=0,
        description="after this long since the message was received, a temporary failure "
                    "becomes a permanent one (RFC 5321 4.5.4.1: at least 4-5 days)")
    max_ack_pending: int = Field(
        default=1024, ge=1,
        description="the hot consumer's window of unacked events over all replicas (nothing "
                    "waits in it: retries go to the NOTIFY_RETRY stream)")
    max_deliver: int = Field(
        default=10, ge=1,
        description="deliveries of an event that keeps failing for a reason other than SMTP "
                    "(MongoDB or NATS trouble, a bug) before it goes to the dead letters")
    retry_concurrency: int = Field(
        default=8, ge=1, description="retries in flight per replica (beside CONCURRENCY)")
    retry_max_ack_pending: int = Field(
        default=100_000, ge=1,
        description="notifications the retry consumer may hold waiting for their time; "
                    "beyond, later retries queue in the stream behind them")
    target_down_s: float = Field(
        default=5.0, gt=0,
        description="an SMTP target whose connection failed or hung is down this long (then "
                    "one probe); doubles per failure up to TARGET_DOWN_MAX_S")
    target_down_max_s: float = Field(default=300.0, gt=0)
    claims_ttl_s: float = Field(
        default=30 * 24 * 3600.0, gt=0,
        description="how long a recipient's delivery claim is kept (KV bucket max_age); must "
                    "exceed GIVE_UP_AFTER_S, or a redelivered event could notify again")
    smtp_pool_size: int = Field(
        default=4, ge=1, description="connections per SMTP target; also the most handlers one "
                                     "target can hold, so keep it below CONCURRENCY")
    target_rate_per_s: float = Field(
        default=50.0, ge=0, description="messages per second per replica to each tenant's own "
                                        "SMTP server (0: unlimited; a tenant may set lower)")
    platform_rate_per_s: float = Field(
        default=0.0, ge=0, description="messages per second per replica to the platform's "
                                       "default relay (0: unlimited -- the relay is the "
                                       "operator's own, sized for the platform's load)")
    target_saturated_wait_s: float = Field(
        default=2.0, gt=0, description="an SMTP target with every connection busy and none "
                                       "freed for this long counts as stalled: its events are "
                                       "sent back for later instead of holding handlers")
    target_max_waiting: int = Field(
        default=64, ge=0, description="handlers that may queue for a busy (not stalled) SMTP "
                                      "target's connections; more get the event sent back")
    tenant_target_max_waiting: int = Field(
        default=2, ge=0, description="handlers that may queue for a tenant's OWN SMTP server "
                                     "beyond its connections (per replica); more go to the "
                                     "retry stream, so one tenant's server never holds the "
                                     "handlers others need")
    tenant_target_max_rate_wait_s: float = Field(
        default=0.25, gt=0, description="longest wait in a handler for a rate turn of a "
                                        "tenant's own server; a later turn goes to the retry "
                                        "stream")
    smtp_reuse: bool = Field(
        default=True, description="keep SMTP connections open for the next notification; "
                                  "false: one connection per message (benchmarks)")
    standby_smtp_host: str | None = Field(
        default=None, description="standby relay for the platform's own sending, used while "
                                  "dnsbl_status says relay=standby")
    standby_smtp_port: int = 25
    standby_smtp_tls: Literal["none", "starttls", "tls"] = "none"
    standby_smtp_username: str | None = None
    standby_smtp_password: SecretStr | None = None
    relay_check_s: float = Field(
        default=30.0, gt=0, description="re-read the relay choice (dnsbl_status) at most "
                                        "this often")
    render_workers: int = Field(
        default=4, ge=1, description="threads rendering tenant templates off the event loop")
    render_per_tenant: int = Field(
        default=1, ge=1, description="renders of one tenant's templates at a time (per "
                                     "replica): a slow template delays only its own tenant")
    render_max_waiting: int = Field(
        default=2, ge=0, description="renders of one tenant that may wait for their turn; "
                                     "more come back later instead of holding handlers")
    template_timeout_s: float = Field(
        default=0.5, gt=0, le=0.5, description="CPU time one tenant template render may take "
                                               "before the default is used (at most the "
                                               "save-time limit, 0.5 s)")
    tenant_cache_s: float = Field(
        default=60.0, ge=0,
        description="Longest time a tenant's cached branding, templates and SMTP settings "
                    "are used (dropped at once on tenant.changed) and its undeliverable list "
                    "is kept; 0: read every time")
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    graceful_timeout_s: float = Field(
        default=20.0, gt=0, description="on SIGTERM, wait this long for in-flight events")
