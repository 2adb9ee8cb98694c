"""SSRF guard: hostile hosts are refused before any connection; the allow-list opens exceptions."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from secmsg.shared.ssrf import (
    AllowList,
    TargetRefused,
    TargetUnresolvable,
    resolve_checked,
)

HOSTILE = [
    "127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST.", "0.0.0.0", "0",
    "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1",
    "100.64.0.1", "100.127.255.254",
    "169.254.169.254", "169.254.0.1",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::1", "[::1]", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "[::ffff:169.254.169.254]", "::ffff:10.0.0.1", "::ffff:7f00:1",
    "::127.0.0.1", "2002:7f00:0001::1", "64:ff9b::a9fe:a9fe",
    # Ambiguous IPv4 literals that libc resolves to loopback / metadata.
    "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.0.0.1", "127.1", "127.0.1",
    "017700000001", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",
    # Not a host at all.
    "", "a b", "host/path", "user@host", "fe80::1%eth0", "999.999.999.999",
]


@pytest.mark.parametrize("host", HOSTILE)
async def test_hostile_hosts_are_refused(host: str) -> None:
    with pytest.raises(TargetRefused):
        await resolve_checked(host, 25)


@pytest.mark.parametrize("host", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                  "[2001:4860:4860::8888]"])
async def test_public_literals_pass(host: str) -> None:
    addrs = await resolve_checked(host, 587)
    assert addrs == [ipaddress.ip_address(host.strip("[]"))]


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
async def test_port_out_of_range(port: int) -> None:
    with pytest.raises(TargetRefused):
        await resolve_checked("8.8.8.8", port)


async def test_name_resolving_to_any_refused_address_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """All addresses must pass: one public plus one private answer is still refused."""
    import asyncio

    async def fake_getaddrinfo(self, host, port, **kw):
        assert host == "mixed.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(TargetRefused):
        await resolve_checked("mixed.example", 25)


async def test_name_resolving_to_public_addresses_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    calls: list[str] = []

    async def fake_getaddrinfo(self, host, port, **kw):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", fake_getaddrinfo)
    addrs = await resolve_checked("mail.example.com", 25)
    assert addrs == [ipaddress.ip_address("93.184.216.34"),
                     ipaddress.ip_address("2606:2800:220:1::1")]
    assert calls == ["mail.example.com"]  # resolved exactly once


async def test_unresolvable_name() -> None:
    with pytest.raises(TargetUnresolvable):
        await resolve_checked("no-such-host.invalid", 25)


async def test_allow_list_cidr_opens_loopback() -> None:
    allow = "127.0.0.0/8, 10.20.0.0/16"
    assert await resolve_checked("127.0.0.1", 2525, allow=allow) == [
        ipaddress.ip_address("127.0.0.1")]
    assert await resolve_checked("10.20.3.4", 25, allow=allow) == [
        ipaddress.ip_address("10.20.3.4")]
    addrs = await resolve_checked("localhost", 25, allow=allow + ",::1")
    assert addrs and all(a.is_loopback for a in addrs)
    # Only what is listed: other private ranges and metadata stay refused.
    for host in ("10.21.0.1", "169.254.169.254", "192.168.0.1"):
        with pytest.raises(TargetRefused):
            await resolve_checked(host, 25, allow=allow)
    # The allow-list does not legitimise ambiguous literal forms.
    with pytest.raises(TargetRefused):
        await resolve_checked("2130706433", 25, allow=allow)


async def test_allow_list_host_name() -> None:
    allow = AllowList.parse("localhost")
    addrs = await resolve_checked("localhost", 25, allow=allow)
    assert addrs and all(a.is_loopback for a in addrs)
    with pytest.raises(TargetRefused):
        await resolve_checked("127.0.0.1", 25, allow=allow)


def test_allow_list_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        AllowList.parse("10.0.0.0/8, not a host!")
    assert AllowList.parse("") == AllowList()
