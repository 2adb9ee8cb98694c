"""Settings every service shares, read from ``SECMSG_*`` environment variables.

Each service adds its own ``Settings`` (prefix ``SECMSG_<SERVICE>_``) in its ``settings.py``.
Outside ``SECMSG_ENVIRONMENT=development`` the placeholder secrets are refused at start-up.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from secmsg.shared.crypto import KeyRing

_DEV_KEYRING = "1:ZGV2ZWxvcG1lbnQta2V5cmluZy1kby1ub3QtdXNlISE="  # 32 bytes, development only
_DEV_S3_SECRET = "secmsg-dev-secret"  # noqa: S105 - refused outside development


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_", extra="ignore", env_ignore_empty=True)

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"

    nats_url: str = "nats://127.0.0.1:4222"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "secmsg"
    mongo_timeout_ms: int = 5000

    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "secmsg-dev"
    s3_secret_key: str = _DEV_S3_SECRET
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_bucket: str = "secmsg"

    keyring: str = Field(default=_DEV_KEYRING, description="'<version>:<base64 32 bytes>,...'")
    keyring_active: int | None = None

    retrieve_public_url: str = Field(
        default="https://127.0.0.1:8443",
        description="Base URL recipients use to reach retrieve (links in notifications)")

    # The platform's default SMTP service (notifications and sign-in codes).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 30.0
    smtp_from: str = "notifications@secmsg.localhost"

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> CommonSettings:
        if self.environment == "production" and self.s3_secret_key == _DEV_S3_SECRET:
            raise ValueError("SECMSG_S3_SECRET_KEY must be set in production")
        return self

    @cached_property
    def key_ring(self) -> KeyRing:
        """The keyring; only services that encrypt or decrypt (ingest, retrieve) touch it, so
        only they need ``SECMSG_KEYRING`` (least privilege for store and notify)."""
        if self.environment == "production" and self.keyring == _DEV_KEYRING:
            raise ValueError("SECMSG_KEYRING must be set to a real keyring in production")
        return KeyRing.parse(self.keyring, self.keyring_active)
