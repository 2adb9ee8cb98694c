"""Store settings: ``SECMSG_STORE_*`` (shared values come from ``CommonSettings``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from secmsg.shared.settings import ProbePort, ProbeSettings


class StoreSettings(ProbeSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_STORE_", extra="ignore")

    internal_port: ProbePort = 8081

    expiry_interval_s: float = Field(default=60.0, gt=0,
                                     description="how often the expiry purge runs")
    retention_interval_s: float = Field(
        default=900.0, gt=0,
        description="how often the retention purge runs (tenants with policy.retention_days); "
                    "a run that purged a whole EXPIRY_BATCH is followed by the next at once")
    expiry_batch: int = Field(
        default=500, gt=0,
        description="most messages one purge run (expiry, retention) purges; a run that "
                    "purged this many is followed by the next at once")
    expiry_grace_s: float = Field(
        default=120.0, gt=0,
        description="an expiry bucket is closed (never read again) this long after its minute "
                    "ended: the most a replica's clock may lag and a bucket write may take")
    expiry_catchup_minutes: int = Field(
        default=1440, gt=0,
        description="most expiry buckets (minutes) one purge run reads; after a longer pause "
                    "the catch-up goes on in the next runs")
    purge_lease_s: float = Field(
        default=300.0, gt=0,
        description="a claim older than this is taken over by another replica")
    orphan_sweep_interval_s: float = Field(default=3600.0, gt=0)
    orphan_grace_s: float = Field(
        default=86400.0, ge=0,
        description="objects younger than this are never swept (uploads still in flight)")

    batch_size: int = Field(default=16, gt=0, description="events fetched per pull request")
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    delivery_batch_size: int = Field(
        default=100, gt=0, description="notification.* events recorded together (one batch)")
    delivery_batch_wait_s: float = Field(
        default=0.1, gt=0,
        description="longest wait for a delivery batch to fill before handling what came")
    ack_wait_s: float = Field(default=30.0, gt=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    max_deliver: int = Field(
        default=10, ge=1,
        description="deliveries of an event that keeps failing (a bug, a dependency down for "
                    "longer than the back-off covers) before it is dead-lettered")
    dead_letters_poll_s: float = Field(
        default=30.0, gt=0,
        description="how often the dead-letter gauge (secmsg_dead_letters) is refreshed")
    admin_token: SecretStr | None = Field(
        default=None,
        description="platform operator's bearer token for /admin/dead-letters on this port "
                    "(unset: the admin endpoints answer 404)")
    control_missing_retries: int = Field(
        default=5, ge=0,
        description="deliveries of an expiry change for a message not on record yet before "
                    "it is dead-lettered")
    rewrap_page_size: int = Field(default=200, gt=0,
                                  description="messages read per page by the key re-wrap job")
    rewrap_progress_every: int = Field(
        default=50, gt=0, description="the re-wrap job saves its progress every N messages")
    rewrap_pause_s: float = Field(
        default=0.0, ge=0,
        description="pause after each message of the re-wrap job (spares live traffic)")
    graceful_timeout_s: float = Field(
        default=20.0, gt=0,
        description="on SIGTERM, wait this long for in-flight events (k8s grace is 30 s)")
