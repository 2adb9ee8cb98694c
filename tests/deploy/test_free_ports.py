"""The ports the local stack and the tests give their servers (``devstack.servers.free_port``).

A port from the kernel's ephemeral range can be taken by any outgoing connection between the
moment it is chosen and the server's bind (a CI run failed so: retrieve restarted on its own
port found it in use). The ports come from below that range, are free when given, and are not
given twice in a row of starts.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack import servers
from devstack.servers import free_port


def test_ports_come_from_below_the_ephemeral_range_and_differ() -> None:
    low = servers.ephemeral_low()
    assert low == int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < p < low for p in ports), [p for p in ports if not 1024 < p < low]


def test_a_port_in_use_or_just_given_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    given = free_port()
    with socket.socket() as held:
        # Another program's listener (not a port free_port gave out) just below the range.
        for candidate in range(servers.ephemeral_low() - 1, servers.PORT_FLOOR, -1):
            try:
                held.bind(("127.0.0.1", candidate))
                break
            except OSError:
                continue
        held.listen()
        in_use = held.getsockname()[1]
        # The first random draws name the port in use, then the one just given; then chance.
        draws = iter([in_use - servers.PORT_FLOOR, given - servers.PORT_FLOOR])
        real = servers.secrets.randbelow
        monkeypatch.setattr(servers.secrets, "randbelow", lambda n: next(draws, None) or real(n))
        port = free_port()
        assert next(draws, None) is None  # both were drawn, and skipped
        assert port not in (in_use, given)
