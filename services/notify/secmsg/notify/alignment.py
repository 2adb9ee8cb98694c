"""Names that make a notification line up with its From domain (DMARC, RFC 7489 3.1):
the EHLO name, and the envelope sender's domain for tenants that sign with their own key.

* DKIM: notify signs with ``d=`` the tenant's domain when it has a key (its From is then at that
  domain), else with the platform key (``d=`` the platform sender's domain).
* SPF checks the envelope sender's domain (the Return-Path a mailbox shows), so that domain must
  share the From's organisational domain to be aligned: for a tenant key that is
  ``<TENANT_BOUNCE_SUBDOMAIN>.<tenant DKIM domain>`` (opt-in, since the tenant must publish its
  MX and SPF first: a sender domain that does not resolve gets mail refused).
* The Message-ID's domain is the From's (compose.py); the EHLO name is a real FQDN of the
  sending host (``secmsg.shared.dkim.default_ehlo_name``), never a bare host name.
"""

from __future__ import annotations

from secmsg.shared.dnsnames import is_dns_name


def tenant_bounce_domain(subdomain: str | None, dkim_domain: str) -> str | None:
    """``<subdomain>.<dkim_domain>``: a tenant's envelope sender domain, aligned with its From."""
    if not subdomain:
        return None
    return f"{subdomain.lower()}.{dkim_domain.lower()}"


def is_bounce_domain(domain: str, *, base_domain: str, subdomain: str | None) -> bool:
    """Whether bounces to ``domain`` are ours: the platform bounce domain, or (with
    ``subdomain``) any tenant's ``<subdomain>.<domain>``."""
    domain = domain.lower().rstrip(".")
    if domain == base_domain.lower():
        return True
    return bool(subdomain) and domain.startswith(f"{subdomain}.".lower()) \
        and is_dns_name(domain.removeprefix(f"{subdomain}.".lower()), min_labels=2)
