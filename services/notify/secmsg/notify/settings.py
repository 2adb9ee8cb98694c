"""notify's own settings, read from ``SECMSG_NOTIFY_*`` (shared ones come from CommonSettings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_NOTIFY_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8082

    concurrency: int = Field(default=16, ge=1, description="events in flight per replica")
    lease_s: float = Field(
        default=120.0, gt=0,
        description="how long a claim on one recipient stays exclusive; must exceed the "
                    "worst-case SMTP send (SECMSG_SMTP_TIMEOUT_S)")
    ack_wait_s: float = Field(
        default=60.0, gt=0,
        description="JetStream redelivers an event not acked within this time (e.g. after a "
                    "crash); live claims make an early redelivery harmless")
    retry_base_s: float = Field(default=30.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    give_up_after_s: float = Field(
        default=172800.0, ge=0,
        description="after this long since the message was received, a temporary failure "
                    "becomes a permanent one")
    claims_ttl_s: float = Field(
        default=30 * 24 * 3600.0, gt=0,
        description="how long a recipient's delivery claim is kept (KV bucket max_age); must "
                    "exceed GIVE_UP_AFTER_S, or a redelivered event could notify again")
    smtp_pool_size: int = Field(
        default=4, ge=1, description="connections per SMTP target; also the most handlers one "
                                     "target can hold, so keep it below CONCURRENCY")
    target_rate_per_s: float = Field(
        default=50.0, ge=0, description="messages per second per SMTP target (0: unlimited)")
    target_saturated_wait_s: float = Field(
        default=2.0, gt=0, description="a tenant's own SMTP target with every connection busy "
                                       "this long: the notification is deferred instead of "
                                       "holding a handler")
    tenant_cache_s: float = Field(default=60.0, ge=0)
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    graceful_timeout_s: float = Field(
        default=20.0, gt=0, description="on SIGTERM, wait this long for in-flight events")
