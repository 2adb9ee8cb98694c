"""retrieve's own settings, read from ``SECMSG_RETRIEVE_*`` (shared ones: ``CommonSettings``).

Outside development and test the placeholder code pepper is refused, like the shared secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from secmsg.shared.httpserver import EdgeSettings
from secmsg.shared.settings import ProbePort, ProbeSettings

_DEV_PEPPER = "secmsg-dev-code-pepper-do-not-use"


class RetrieveSettings(EdgeSettings, ProbeSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_RETRIEVE_", extra="ignore")

    # Read from the shared variable so the pepper check knows where it runs.
    environment: Literal["development", "test", "production"] = Field(
        default="development", validation_alias=AliasChoices("SECMSG_ENVIRONMENT"))

    port: int = Field(default=8443, description="port of the public HTTPS")
    internal_port: ProbePort = 9443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plain_http: bool = Field(
        default=False, description="Serve plain HTTP (only behind a TLS-terminating ingress)")

    download_recheck_bytes: int = Field(
        default=1024 * 1024, ge=2,
        description="A download in progress re-checks revocation at least every this many "
                    "bytes, or DOWNLOAD_RECHECK_S, whichever allows more: that much may still "
                    "leave after a revocation or recall is recorded")
    download_recheck_s: float = Field(
        default=0.25, ge=0,
        description="... and at least every this many seconds (0: by bytes only, i.e. a "
                    "database lookup per DOWNLOAD_RECHECK_BYTES streamed)")

    code_ttl_s: int = Field(default=600, ge=1, le=600)
    code_pepper: str = Field(default=_DEV_PEPPER, min_length=16)
    code_max_attempts: int = Field(default=5, ge=1, le=5)

    session_idle_s: int = Field(default=1800, ge=1)
    session_max_s: int = Field(default=43200, ge=1)
    cookie_name: str = "secmsg_session"

    # Fixed-window rate limits (window in seconds, then the allowed count per window).
    rate_window_s: int = Field(default=900, ge=1)
    code_requests_per_address: int = Field(default=5, ge=1)
    code_requests_per_ip: int = Field(default=30, ge=1)
    verify_attempts_per_address: int = Field(default=10, ge=1)
    verify_attempts_per_ip: int = Field(default=60, ge=1)

    ingest_url: str = Field(
        default="http://127.0.0.1:8080",
        description="ingest's base URL; the webmail sends replies there with a short-lived "
                    "send token")

    password_attempts_per_account: int = Field(
        default=50, ge=1,
        description="Password tries per account per window from all IPs together; over it "
                    "password tries answer 429 (the emailed code still signs in, and under "
                    "password+code a try that brings a valid code is not counted)")
    password_attempts_per_account_per_day: int = Field(
        default=200, ge=1,
        description="Back-off's second tier: password tries per account per 24 h from all "
                    "IPs together (same exemptions)")
    totp_attempts_per_account: int = Field(
        default=10, ge=1,
        description="Authenticator-code tries per account per window from all IPs together; "
                    "over it 429")
    totp_attempts_per_account_per_day: int = Field(
        default=30, ge=1,
        description="Back-off's second tier: authenticator-code tries per account per 24 h")
    pwned_range_url: str | None = Field(
        default=None,
        description="Optional k-anonymity breached-password range API (Have I Been Pwned "
                    "shape, e.g. https://api.pwnedpasswords.com/range); off by default")
    mfa_ticket_ttl_s: int = Field(default=300, ge=30, le=900,
                                  description="Time to enter the TOTP code after the first "
                                              "factor")
    webauthn_rp_id: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$",
        description="Passkeys: the relying party id, a domain (e.g. secure.example.com or a "
                    "parent of it); empty: the host of SECMSG_RETRIEVE_PUBLIC_URL. Every "
                    "passkey is bound to it: changing it makes the registered ones unusable")
    webauthn_origins: list[str] = Field(
        default_factory=list,
        description="Passkeys: the origins a ceremony may come from (JSON list, e.g. "
                    "[\"https://secure.example.com\"]); empty: the origin of "
                    "SECMSG_RETRIEVE_PUBLIC_URL")
    webauthn_ticket_ttl_s: int = Field(
        default=300, ge=30, le=900,
        description="Passkeys: time to answer one registration or sign-in challenge")
    device_code_ttl_s: int = Field(default=600, ge=60, le=1800)
    device_poll_interval_s: int = Field(default=5, ge=1, le=60)
    device_token_ttl_days: int | None = Field(
        default=180, ge=1, description="Lifetime of toolbar tokens; empty: no expiry")

    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=200, ge=1)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1,
                                description="Largest text/html body returned inline")
    publish_timeout_s: float = Field(default=5.0, gt=0)
    cleanup_interval_s: float = Field(
        default=300, gt=0,
        description="Seconds between passes deleting expired codes, sessions and rate-limit "
                    "slots (needed where the server has no TTL indexes, e.g. FerretDB)")
    shutdown_grace_s: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> RetrieveSettings:
        if self.environment == "production" and self.code_pepper == _DEV_PEPPER:
            raise ValueError("SECMSG_RETRIEVE_CODE_PEPPER must be set in production")
        if self.session_idle_s > self.session_max_s:
            raise ValueError("SECMSG_RETRIEVE_SESSION_IDLE_S exceeds SESSION_MAX_S")
        return self


class WebSettings(BaseSettings):
    """The Secure Message Center's own (the web pages), same prefix."""

    model_config = SettingsConfigDict(env_prefix="SECMSG_RETRIEVE_", extra="ignore")

    web_page_size: int = Field(default=25, ge=1, le=200,
                               description="Messages per page of the webmail's lists")
    web_ingest_timeout_s: float = Field(
        default=300, gt=0, description="Timeout of the webmail's calls to ingest (sending a "
                                       "reply with its attachments)")
    web_max_attachments: int = Field(default=20, ge=0, le=100,
                                     description="Attachments one webmail reply may carry")
