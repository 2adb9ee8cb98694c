"""NATS over TLS, as in the production overlay: the services' connection options
(``SECMSG_NATS_TLS_CA_FILE``, ``tls://`` URLs) against a real nats-server that requires TLS,
for both the plain client (``bus.connect``) and FastStream's broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from devstack.servers import NatsServer, ensure_binaries, free_port, make_nats
from devstack.tls import ensure_cert
from secmsg.shared import bus, subjects
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.settings import CommonSettings


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    cert, key = ensure_cert(tmp_path / "tls")
    srv = make_nats(ensure_binaries()["nats"], free_port(), tmp_path / "nats", tls=(cert, key))
    srv.start()
    yield srv, cert
    srv.stop()


def _settings(srv: NatsServer, **kw: object) -> CommonSettings:
    return CommonSettings(nats_user="retrieve", nats_password=srv.passwords["retrieve"],
                          **kw)  # type: ignore[arg-type]


async def test_services_connect_over_tls_with_the_configured_ca(
        tls_nats: tuple[NatsServer, Path]) -> None:
    srv, ca = tls_nats
    s = _settings(srv, nats_url=f"tls://127.0.0.1:{srv.port}", nats_tls_ca_file=str(ca))
    nc = await bus.connect(s.nats_url, "tls-test", **bus.connect_options(s))
    try:
        assert nc.is_connected and nc.connected_url is not None
        await bus.ensure_stream(nc)  # a JetStream round trip over TLS, as retrieve does
        assert (await nc.jetstream().stream_info(subjects.STREAM)).config.name
    finally:
        await nc.close()

    broker = NatsBroker(bus.servers(s.nats_url), **bus.broker_options(s),
                        max_reconnect_attempts=0)
    try:
        conn = await broker.connect()
        assert conn.is_connected
    finally:
        await broker.stop()


async def test_no_plain_text_and_no_unknown_certificate(tls_nats: tuple[NatsServer, Path],
                                                        tmp_path: Path) -> None:
    srv, _ = tls_nats
    # plain nats:// to a TLS-only server, and TLS with a CA that did not sign the server's
    other_ca, _ = ensure_cert(tmp_path / "other")
    for s in (_settings(srv, nats_url=f"nats://127.0.0.1:{srv.port}"),
              _settings(srv, nats_url=f"tls://127.0.0.1:{srv.port}",
                        nats_tls_ca_file=str(other_ca))):
        with pytest.raises(DependencyUnavailable):
            nc = await bus.connect(s.nats_url, "tls-test", allow_reconnect=False,
                                   **bus.connect_options(s))
            await nc.close()


def test_nats_credentials_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("SECMSG_NATS_USER", "SECMSG_NATS_PASSWORD", "SECMSG_NATS_URL",
              "SECMSG_ENVIRONMENT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="SECMSG_NATS_PASSWORD"):
        CommonSettings(nats_user="store")
    with pytest.raises(ValueError, match="credentials"):
        CommonSettings(nats_user="store", nats_password="pw",
                       nats_url="nats://admin:pw@127.0.0.1:4222")
    with pytest.raises(ValueError, match="SECMSG_NATS_USER"):
        CommonSettings(environment="production", s3_secret_key="real")
