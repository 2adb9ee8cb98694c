"""Ingest's own settings (``SECMSG_INGEST_*``); shared ones come from ``CommonSettings``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from secmsg.shared.crypto import DEFAULT_SEGMENT_SIZE
from secmsg.shared.httpserver import EdgeSettings
from secmsg.shared.settings import ProbePort, ProbeSettings


class IngestSettings(EdgeSettings, ProbeSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_INGEST_", extra="ignore",
                                      env_ignore_empty=True)

    port: int = Field(default=8080, description="port of the public API")
    internal_port: ProbePort = 9080
    max_concurrent_uploads: int = Field(
        default=64, gt=0,
        description="Submissions processed at once; more get 429 so memory stays bounded")
    max_concurrent_uploads_per_tenant: int = Field(
        default=16, gt=0,
        description="Submissions of one tenant processed at once (all its keys and tokens); "
                    "more get 429, so one tenant's slow uploads leave the others room")
    upload_queue_chunks: int = Field(
        default=4, gt=0,
        description="Ciphertext chunks buffered between the request and the object store")
    segment_size: int = Field(default=DEFAULT_SEGMENT_SIZE, gt=0)
    inline_max_bytes: int = Field(
        default=64 * 1024, ge=0,
        description="Bodies and attachments of at most this many bytes are kept, encrypted "
                    "the same way, inside the message document instead of as S3 objects (no "
                    "S3 PUT, HEAD or GET for them); larger ones stream to S3. 0: never inline")
    inline_total_max_bytes: int = Field(
        default=256 * 1024, ge=0, le=512 * 1024,
        description="Most ciphertext one message keeps inline (all its small objects "
                    "together; the rest go to S3): it travels in message.received, which "
                    "must stay under NATS's 1 MiB payload cap")
    publish_timeout_s: float = Field(default=5.0, gt=0)
    idempotency_heartbeat_s: float = Field(default=30.0, gt=0)
    idempotency_stale_s: float = Field(
        default=120.0, gt=0,
        description="A pending Idempotency-Key whose heartbeat is older is a crashed attempt")
    idempotency_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    readiness_timeout_s: float = Field(default=2.0, gt=0)
    smtp_test_per_minute: int = Field(
        default=5, gt=0,
        description="SMTP tests (POST /v1/admin/smtp/test) per tenant per minute, per instance")
    smtp_test_timeout_s: float = Field(
        default=10.0, gt=0, description="Per SMTP exchange of an SMTP test")
