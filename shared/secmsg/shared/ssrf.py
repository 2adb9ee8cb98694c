"""SSRF guard for outbound connections to tenant-chosen hosts (tenant SMTP servers).

A tenant-supplied host name is resolved exactly once; every address it yields must be a
public unicast address, or inside the operator's allow-list (``SECMSG_SMTP_ALLOWED_TARGETS``).
The caller then connects to one of the returned addresses, never to the name again, so a
DNS answer that changes between the check and the connect (rebinding) cannot redirect it.
The host name is kept only for TLS (SNI and certificate verification).

Ambiguous IPv4 literals (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are
refused outright: resolvers disagree on them, and no honest configuration needs them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from secmsg.shared.errors import InvalidInput, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused unless allow-listed. ipaddress' is_private/is_reserved cover most of these, but
# spelling them out keeps the policy readable and independent of Python-version drift.
_REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",          # "this network", incl. unspecified
    "10.0.0.0/8",         # RFC 1918
    "100.64.0.0/10",      # CGNAT
    "127.0.0.0/8",        # loopback
    "169.254.0.0/16",     # link-local, incl. 169.254.169.254 cloud metadata
    "172.16.0.0/12",      # RFC 1918
    "192.0.0.0/24",       # IETF protocol assignments
    "192.0.2.0/24",       # TEST-NET-1
    "192.168.0.0/16",     # RFC 1918
    "198.18.0.0/15",      # benchmarking
    "198.51.100.0/24",    # TEST-NET-2
    "203.0.113.0/24",     # TEST-NET-3
    "224.0.0.0/4",        # multicast
    "240.0.0.0/4",        # reserved, incl. broadcast
    "::/128",             # unspecified
    "::1/128",            # loopback
    "64:ff9b::/96",       # NAT64 (embeds IPv4; could reach internal v4 via a translator)
    "100::/64",           # discard
    "2001:db8::/32",      # documentation
    "fc00::/7",           # ULA
    "fe80::/10",          # link-local
    "fec0::/10",          # deprecated site-local
    "ff00::/8",           # multicast
))

_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_CANONICAL_V4 = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")


class TargetRefused(InvalidInput):
    """The host is not a permitted outbound target (private, loopback, metadata, ...)."""

    code = "target_refused"


class TargetUnresolvable(TransientError):
    """The host name did not resolve (may be temporary)."""

    code = "target_unresolvable"


@dataclass(frozen=True)
class AllowList:
    """Operator exceptions: networks (CIDR or single IP) and exact host names."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str] | str | None) -> AllowList:
        if entries is None:
            return cls()
        if isinstance(entries, str):
            entries = entries.split(",")
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _HOSTNAME.match(entry):
                    raise ValueError(f"not a CIDR, IP or host name: {entry!r}") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self.networks)


def _unmap(addr: IPAddress) -> IPAddress:
    """IPv4-mapped / -compatible / 6to4 IPv6 addresses are judged by the IPv4 inside."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if addr.teredo is not None:
            return addr.teredo[1]
        packed = addr.packed
        if packed[:12] == b"\x00" * 12 and addr not in (ipaddress.IPv6Address("::"),
                                                        ipaddress.IPv6Address("::1")):
            return ipaddress.IPv4Address(packed[12:])  # deprecated IPv4-compatible form
    return addr


def is_public(addr: IPAddress) -> bool:
    """True for a global unicast address that no refused range contains."""
    inner = _unmap(addr)
    for candidate in {addr, inner}:
        if any(candidate.version == n.version and candidate in n for n in _REFUSED_NETWORKS):
            return False
        if (candidate.is_private or candidate.is_loopback or candidate.is_link_local
                or candidate.is_multicast or candidate.is_reserved
                or candidate.is_unspecified):
            return False
    return True


def check_address(addr: IPAddress, allow: AllowList) -> None:
    if allow.allows_address(addr) or allow.allows_address(_unmap(addr)):
        return
    if not is_public(addr):
        raise TargetRefused("the host resolves to an address that is not permitted")


def _literal(host: str) -> IPAddress | None:
    """The IP a host string denotes literally, or None for a name. Refuses ambiguous forms."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in bare:
        raise TargetRefused("scoped IPv6 addresses are not permitted")
    try:
        return ipaddress.IPv6Address(bare)
    except ValueError:
        pass
    if _CANONICAL_V4.match(bare):
        return ipaddress.IPv4Address(bare)
    try:
        socket.inet_aton(bare)
    except OSError:
        return None
    # inet_aton accepted a decimal / octal / hex / short form: refuse, whatever it means.
    raise TargetRefused("non-canonical IP address forms are not permitted")


def validate_host_syntax(host: str) -> None:
    """Refuse anything that is neither a canonical IP literal nor a DNS host name."""
    if _literal(host) is None and (not _HOSTNAME.match(host) or host.replace(".", "").isdigit()):
        raise TargetRefused("not a valid host name")


async def resolve_checked(host: str, port: int, *,
                          allow: AllowList | Iterable[str] | str | None = None
                          ) -> list[IPAddress]:
    """Resolve ``host`` once and return its addresses, all checked; connect to one of these.

    Raises ``TargetRefused`` if any address is refused (all must pass: a name that mixes a
    public and a private address is refused) and ``TargetUnresolvable`` if it resolves to
    nothing.
    """
    allow = allow if isinstance(allow, AllowList) else AllowList.parse(allow)
    if not 0 < port < 65536:
        raise TargetRefused("port out of range")
    validate_host_syntax(host)
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow)
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host.rstrip("."), port, type=socket.SOCK_STREAM,
                                       proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable("the host name does not resolve") from exc
    addrs: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        addr = ipaddress.ip_address(text)
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise TargetUnresolvable("the host name does not resolve")
    if allow.allows_host(host):
        return addrs
    for addr in addrs:
        check_address(addr, allow)
    return addrs


class PinnedNameContext(ssl.SSLContext):
    """A client TLS context that always verifies (and sends SNI for) one host name, whatever
    address the connection was opened to: after ``resolve_checked`` the connection goes to the
    checked IP, and a client such as aiosmtplib passes that IP as ``server_hostname``; this
    puts the configured name back, so certificate checks stay on."""

    pinned_name: str | None = None

    @classmethod
    def for_host(cls, name: str, cafile: str | None = None) -> PinnedNameContext:
        ctx = cls(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on, CERT_REQUIRED
        ctx.load_default_certs()
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
        ctx.pinned_name = name
        return ctx

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,  # type: ignore[override]
                 server_side: bool = False, server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side,
                                self.pinned_name or server_hostname, session)
