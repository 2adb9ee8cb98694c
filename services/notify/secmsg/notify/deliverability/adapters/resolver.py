"""Blocklist lookups with dnspython's asyncio resolver."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver

from secmsg.notify.deliverability.ports import Lookup


def parse_nameserver(value: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, 53


class DnsBlocklistResolver:
    def __init__(self, *, nameserver: str | None, timeout_s: float) -> None:
        if nameserver:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            host, port = parse_nameserver(nameserver)
            self._resolver.nameservers = [host]
            self._resolver.port = port
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.timeout = timeout_s
        self._resolver.lifetime = timeout_s

    async def lookup_a(self, name: str) -> Lookup:
        try:
            answer = await self._resolver.resolve(name, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Lookup("nxdomain")
        except dns.exception.Timeout:
            return Lookup("timeout")
        except dns.exception.DNSException:
            return Lookup("error")
        return Lookup("answer", tuple(r.to_text() for r in answer))
