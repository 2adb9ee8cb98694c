"""Settings every service shares, read from ``SECMSG_*`` environment variables.

Each service adds its own ``Settings`` (prefix ``SECMSG_<SERVICE>_``) in its ``settings.py``.
Outside ``SECMSG_ENVIRONMENT=development`` the placeholder secrets are refused at start-up.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from secmsg.shared import keysource
from secmsg.shared.crypto import KeyRing

_DEV_KEYRING = "1:ZGV2ZWxvcG1lbnQta2V5cmluZy1kby1ub3QtdXNlISE="  # 32 bytes, development only
_DEV_S3_SECRET = "secmsg-dev-secret"  # noqa: S105 - refused outside development


# Every process serves /healthz, /readyz and /metrics on an internal port of its own (plain
# HTTP, loopback unless told otherwise: shared/httpserver.py). The same two settings in each
# service's prefix; only the port's default differs (docs/operations.md lists them).
ProbeHost = Annotated[str, Field(
    description="listen address of /healthz, /readyz, /metrics (Kubernetes: 0.0.0.0)")]
ProbePort = Annotated[int, Field(
    ge=0, le=65535, description="port of /healthz, /readyz, /metrics (plain HTTP)")]


class ProbeSettings(BaseSettings):
    """A base for each service's settings: its internal (probe) port. A service declares only
    its default port, ``internal_port: ProbePort = 8081``."""

    internal_host: ProbeHost = "127.0.0.1"
    internal_port: ProbePort


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_", extra="ignore", env_ignore_empty=True)

    environment: Literal["development", "test", "production"] = Field(
        default="development",
        description="'production' refuses the development placeholder secrets")
    log_level: str = Field(default="INFO", description="Python log level of the JSON logs")
    otel_enabled: bool = Field(
        default=False, description="OpenTelemetry tracing across HTTP and NATS (see "
                                   "docs/observability.md); off by default")
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP collector URL for traces, e.g. "
                                  "http://otel-collector:4318 (unset: OTEL_EXPORTER_OTLP_* "
                                  "or the exporter's default)")

    nats_url: str = Field(default="nats://127.0.0.1:4222",
                          description="NATS server(s) with JetStream, comma-separated "
                                      "(tls://host:port for TLS)")
    nats_user: str | None = Field(
        default=None, description="This service's NATS user (each service has its own, with "
                                  "permissions limited to its subjects: docs/operations.md)")
    nats_password: str | None = Field(default=None, description="Password of SECMSG_NATS_USER")
    nats_tls_ca_file: str | None = Field(
        default=None, description="PEM CA bundle that signed the NATS servers' certificates; "
                                  "set it (or use tls:// URLs) to connect over TLS")
    nats_stream_replicas: int = Field(
        default=1, ge=1, le=5,
        description="Replicas of the SECMSG stream (3 on a 3-node NATS cluster). Only ever "
                    "raised at start-up: a stream with more replicas keeps them (warning)")
    nats_kv_replicas: int = Field(
        default=1, ge=1, le=5,
        description="Replicas of the KV buckets (notify's delivery claims); only ever raised")
    mongo_url: str = Field(default="mongodb://127.0.0.1:27017",
                           description="MongoDB connection string (replica set in production)")
    mongo_db: str = Field(default="secmsg", description="Database name")
    mongo_timeout_ms: int = Field(default=5000,
                                  description="Server selection / connect timeout; past it, 503")

    s3_endpoint: str = Field(default="127.0.0.1:9000", description="S3 host:port (MinIO)")
    s3_access_key: str = Field(default="secmsg-dev", description="S3 access key")
    s3_secret_key: str = Field(default=_DEV_S3_SECRET, description="S3 secret key")
    s3_secure: bool = Field(default=False, description="Use HTTPS to reach S3")
    s3_region: str = Field(default="us-east-1", description="S3 region")
    s3_bucket: str = Field(default="secmsg", description="Bucket holding encrypted content")
    s3_pool_size: int | None = Field(
        default=None, ge=1,
        description="Threads (and kept HTTP connections) for short S3 calls and download reads per "
                    "process, besides one per concurrent upload; unset: the service's own "
                    "concurrency")
    tenant_cache_ttl_s: float = Field(
        default=30.0, ge=0,
        description="Longest time ingest uses a cached API key or tenant (a safety net: "
                    "admin changes drop cached entries at once through tenant.changed; "
                    "0: no cache)")
    tenant_cache_max_entries: int = Field(
        default=10_000, ge=0,
        description="Cached API keys / tenants per cache and process, least recently used "
                    "dropped first (0: no cache)")

    keyring: str = Field(
        default=_DEV_KEYRING,
        description="Platform keyring '<version>:<base64 32 bytes>,...' (ingest and retrieve "
                    "only); keep old versions after a rotation")
    keyring_active: int | None = Field(
        default=None, description="Version that wraps new data keys (default: the highest)")
    keyring_file: Path | None = Field(
        default=None,
        description="A file holding the keyring (one '<version>:<base64>' per line or "
                    "comma-separated), e.g. a Kubernetes Secret mounted read-only; read at "
                    "start-up and used instead of SECMSG_KEYRING")
    keyring_source: str | None = Field(
        default=None,
        description="A keyring plugin 'module:function' (function(settings) -> keyring text, "
                    "e.g. decrypting a keyring kept under a Vault transit or KMS key); used "
                    "instead of SECMSG_KEYRING_FILE and SECMSG_KEYRING")

    retrieve_public_url: str = Field(
        default="https://127.0.0.1:8443",
        description="Base URL recipients use to reach retrieve (links in notifications)")

    # The platform's default SMTP service (notifications and sign-in codes).
    smtp_host: str = Field(default="127.0.0.1", description="Platform SMTP relay host")
    smtp_port: int = Field(default=2525, description="Platform SMTP relay port")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="none", description="none, starttls (required) or tls (implicit)")
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user (optional)")
    smtp_password: str | None = Field(default=None, description="SMTP AUTH password")
    smtp_timeout_s: float = Field(default=30.0, description="Per SMTP exchange")
    smtp_from: str = Field(default="notifications@secmsg.localhost",
                           description="Envelope sender and From address of platform mail")
    smtp_allowed_targets: str = Field(
        default="",
        description="Comma-separated CIDRs, IPs or host names a tenant's own SMTP server may "
                    "use although they are private, loopback, link-local or otherwise refused "
                    "by the SSRF guard (e.g. an internal relay); empty: only public addresses")
    smtp_ca_file: str | None = Field(
        default=None,
        description="PEM bundle of extra CAs trusted when verifying tenant and platform SMTP "
                    "server certificates (default: the system trust store)")

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> CommonSettings:
        if self.environment == "production" and self.s3_secret_key == _DEV_S3_SECRET:
            raise ValueError("SECMSG_S3_SECRET_KEY must be set in production")
        if self.environment == "production" and not self.nats_user:
            raise ValueError("SECMSG_NATS_USER and SECMSG_NATS_PASSWORD must be set in "
                             "production (each service has its own NATS user)")
        if self.nats_user and not self.nats_password:
            raise ValueError("SECMSG_NATS_USER is set but SECMSG_NATS_PASSWORD is not")
        if self.nats_user and "@" in self.nats_url:
            raise ValueError("SECMSG_NATS_URL carries credentials as well as SECMSG_NATS_USER: "
                             "keep them in SECMSG_NATS_USER / SECMSG_NATS_PASSWORD only")
        return self

    @cached_property
    def key_ring(self) -> KeyRing:
        """The keyring. ingest and retrieve (content) need ``SECMSG_KEYRING``; notify for the
        recipient hint in every notification link and for tenants' sealed SMTP passwords and
        DKIM keys; store for the per-tenant re-wrap job (it moves wrapped data keys, never
        decrypts content)."""
        spec = keysource.keyring_text(self)
        if self.environment == "production" and spec == _DEV_KEYRING:
            raise ValueError("SECMSG_KEYRING must be set to a real keyring in production")
        return KeyRing.parse(spec, self.keyring_active)
