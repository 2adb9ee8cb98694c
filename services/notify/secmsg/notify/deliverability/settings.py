"""Settings of the deliverability process, read from ``SECMSG_NOTIFY_*`` (the same prefix as
the notify workers: the bounce address and the standby relay are one setting for both)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from secmsg.shared.dnsnames import BlankIsNone, DnsPrefix, dns_name
from secmsg.shared.settings import ProbeHost, ProbePort


def split_list(value: str) -> list[str]:
    return [item.strip().lower().rstrip(".") for item in value.split(",") if item.strip()]


class DeliverabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SECMSG_NOTIFY_", extra="ignore",
                                      env_ignore_empty=True)

    # Not ProbeSettings' INTERNAL_HOST/_PORT: those are the workers' (same prefix).
    deliverability_internal_host: ProbeHost = "127.0.0.1"
    deliverability_internal_port: ProbePort = 8083
    # Not GRACEFUL_TIMEOUT_S: that one is the workers' (same prefix), with a longer default.
    deliverability_graceful_s: float = Field(
        default=5.0, gt=0, description="on SIGTERM, how long a bounce report being recorded "
                                       "may take to finish")

    bounce_host: str = Field(default="0.0.0.0", description="bounce receiver listen address")
    bounce_port: int = Field(default=2525, description="bounce receiver SMTP port")
    bounce_address: str | None = Field(
        default=None, description="envelope sender of notifications, local@domain; bounces "
                                  "come back to local+<tag>@domain (unset: receiver off)")
    tenant_bounce_subdomain: Annotated[DnsPrefix | None, BlankIsNone] = Field(
        default=None, description="also accept bounces at <this>.<any domain> (tenants' "
                                  "aligned envelope senders); same value as the workers'")
    bounce_max_bytes: int = Field(
        default=2_000_000, gt=0, description="largest bounce report accepted (552 above)")

    dnsbl_interval_s: float = Field(default=3600.0, gt=0, description="seconds between checks")
    dnsbl_ips: str = Field(default="", description="sending IPs to check (comma list, IPv4 "
                                                   "and IPv6)")
    dnsbl_zones: str = Field(default="zen.spamhaus.org,bl.spamcop.net",
                             description="IP blocklist zones (comma list)")
    dnsbl_domains: str = Field(default="", description="sending domains to check (comma list)")
    dnsbl_domain_zones: str = Field(default="dbl.spamhaus.org",
                                    description="domain blocklist zones (comma list)")
    dnsbl_nameserver: str | None = Field(
        default=None, description="resolver to ask, host:port or host (unset: the system's)")
    dnsbl_timeout_s: float = Field(default=5.0, gt=0, description="per lookup; past it the "
                                                                  "result is unknown")
    dnsbl_auto_standby: bool = Field(
        default=False, description="switch dnsbl_status.relay to standby on a listing "
                                   "(needs SECMSG_NOTIFY_STANDBY_SMTP_HOST)")
    standby_smtp_host: str | None = Field(default=None,
                                          description="the standby relay the workers switch to")
    dnsbl_clear_checks: int = Field(
        default=3, ge=1, description="consecutive clean checks before relay goes back to "
                                     "primary")

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, at, domain = value.strip().rpartition("@")
        if not at or not local or not domain or "+" in local or any(c in value for c in
                                                                    "<> \r\n\t"):
            raise ValueError("SECMSG_NOTIFY_BOUNCE_ADDRESS must be local@domain without '+'")
        return value.strip()

    @field_validator("dnsbl_ips")
    @classmethod
    def _ips(cls, value: str) -> str:
        for item in split_list(value):
            ipaddress.ip_address(item)  # ValueError names the bad item
        return value

    @field_validator("dnsbl_zones", "dnsbl_domains", "dnsbl_domain_zones")
    @classmethod
    def _names(cls, value: str) -> str:
        for item in split_list(value):
            dns_name(item)  # ValueError names the bad item and what is wrong with it
        return value

    @property
    def ip_targets(self) -> list[str]:
        return split_list(self.dnsbl_ips)

    @property
    def ip_zones(self) -> list[str]:
        return split_list(self.dnsbl_zones)

    @property
    def domain_targets(self) -> list[str]:
        return split_list(self.dnsbl_domains)

    @property
    def domain_zones(self) -> list[str]:
        return split_list(self.dnsbl_domain_zones)

    @property
    def standby_possible(self) -> bool:
        return self.dnsbl_auto_standby and bool(self.standby_smtp_host)
