"""A tenant's own SMTP server: SSRF guard at connect, TLS required (STARTTLS or implicit) and
verified against the host name, AUTH, and a hanging tenant server not stalling other targets.
Real aiosmtpd servers; the mailer is driven directly."""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from devstack.servers import free_port
from devstack.smtp_sink import Sink
from devstack.tls import ensure_cert
from secmsg.notify.adapters.mongo import (
    SMTP_SECRET_PURPOSE,
    MongoTenantDirectory,
    TenantSmtpOptions,
)
from secmsg.notify.adapters.smtp import SmtpMailer
from secmsg.notify.ports import (
    SmtpPermanentFailure,
    SmtpTarget,
    SmtpUnavailable,
)
from secmsg.shared import mongo
from secmsg.shared.crypto import KeyRing

LOOPBACK = "127.0.0.0/8,::1"
MSG = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_cert(tmp_path / "tls")


def _server_ctx(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def _auth(server: Any, session: Any, envelope: Any, mechanism: str,
          data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"acme" and data.password == b"pw-1"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_sink(cert: tuple[Path, Path]) -> Iterator[Sink]:
    s = Sink(free_port(), None, tls_context=_server_ctx(cert), require_starttls=True,
             authenticator=_auth, auth_require_tls=True)
    s.start()
    yield s
    # aiosmtpd's thread leaves its side of finished STARTTLS sessions for the garbage
    # collector (server side: the client's are closed by the mailer); collect them quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        s.stop()
        gc.collect()


@pytest.fixture
async def mailer() -> AsyncIterator[SmtpMailer]:
    m = SmtpMailer(pool_size=2, saturated_wait_s=0.5)
    yield m
    await m.aclose()


def own(port: int, *, host: str = "localhost", tls: str = "starttls", allow: str = LOOPBACK,
        ca: Path | None = None, **kw: Any) -> SmtpTarget:
    return SmtpTarget(host=host, port=port, tls=tls, timeout_s=5, checked=True,  # type: ignore[arg-type]
                      allowed_targets=allow, ca_file=str(ca) if ca else None, **kw)


async def send(mailer: SmtpMailer, target: SmtpTarget, rcpt: str = "b@example.com") -> None:
    await mailer.send(target, envelope_from="a@example.com", recipient=rcpt, message=MSG)


async def test_starttls_required_and_offered_delivers(mailer: SmtpMailer, tls_sink: Sink,
                                                     cert: tuple[Path, Path]) -> None:
    await send(mailer, own(tls_sink.port, ca=cert[0]))
    assert [m.rcpt_tos for m in tls_sink.messages] == [["b@example.com"]]


async def test_certificate_is_verified_against_the_host_name(
        mailer: SmtpMailer, tls_sink: Sink) -> None:
    # Without the test CA the self-signed certificate is refused: nothing is sent.
    with pytest.raises(SmtpUnavailable, match="tls_failed"):
        await send(mailer, own(tls_sink.port))
    assert tls_sink.messages == []


async def test_starttls_required_but_not_offered_sends_nothing(
        mailer: SmtpMailer, sink: Sink, cert: tuple[Path, Path]) -> None:
    with pytest.raises(SmtpUnavailable, match="tls_unavailable") as info:
        await send(mailer, own(sink.port, host="127.0.0.1", ca=cert[0]))
    assert info.value.reason == "tls_unavailable"
    assert sink.messages == []


async def test_auth_good_and_bad(mailer: SmtpMailer, tls_sink: Sink,
                                 cert: tuple[Path, Path]) -> None:
    await send(mailer, own(tls_sink.port, ca=cert[0], username="acme", password="pw-1"))
    assert len(tls_sink.messages) == 1
    with pytest.raises(SmtpPermanentFailure):
        await send(mailer, own(tls_sink.port, ca=cert[0], username="acme", password="wrong"))
    # A username whose password could not be opened never sends unauthenticated.
    with pytest.raises(SmtpPermanentFailure, match="auth_failed"):
        await send(mailer, own(tls_sink.port, ca=cert[0], username="acme", password=None))
    assert len(tls_sink.messages) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "2130706433"])
async def test_ssrf_refused_host_is_never_connected(mailer: SmtpMailer, sink: Sink,
                                                    host: str) -> None:
    with pytest.raises(SmtpPermanentFailure, match="refused"):
        await send(mailer, own(sink.port, host=host, allow=""))
    assert sink.handler.connections == 0 and sink.messages == []


async def test_hanging_tenant_server_does_not_stall_other_targets(
        mailer: SmtpMailer, sink: Sink) -> None:
    accepted: list[asyncio.StreamWriter] = []
    hanging: list[asyncio.Task[None]] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never send a banner

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging_target = own(port, host="127.0.0.1", tls="tls")
    platform = SmtpTarget(host="127.0.0.1", port=sink.port, timeout_s=5)
    try:
        hanging += [asyncio.create_task(send(mailer, hanging_target)) for _ in range(6)]
        await asyncio.sleep(0)
        others = [send(mailer, platform, f"r{i}@example.com") for i in range(8)]
        await asyncio.wait_for(asyncio.gather(*others), timeout=4)
        assert len(sink.messages) == 8

        async def turned_away() -> None:
            while sum(t.done() for t in hanging) < 4:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(turned_away(), timeout=4)
        # The pool's two slots are still stuck on the silent server ...
        assert sum(not t.done() for t in hanging) == 2
        # ... and the rest were turned away quickly instead of queueing behind them.
        done = [t for t in hanging if t.done()]
        assert all(isinstance(t.exception(), SmtpUnavailable) for t in done)
    finally:
        for t in hanging:
            t.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_directory_builds_the_tenant_target(mongo_db: Any) -> None:
    ring = KeyRing.parse(KeyRing.generate_spec())
    sealed = ring.seal_secret("t-own", SMTP_SECRET_PURPOSE, "pw-1")
    await mongo_db[mongo.TENANTS].insert_many([
        {"_id": "t-own", "name": "Own", "smtp": {
            "mode": "own", "host": "smtp.example.com", "port": 587, "tls": "starttls",
            "username": "acme", "password_sealed": sealed}},
        {"_id": "t-plat", "name": "Plat", "smtp": {"mode": "platform"}},
    ])
    tenants = MongoTenantDirectory(mongo_db, smtp=TenantSmtpOptions(
        allowed_targets="10.0.0.0/8", timeout_s=7, open_secret=ring.open_secret))
    target = (await tenants.branding("t-own")).smtp
    assert target is not None and target.checked and target.tls == "starttls"
    assert (target.host, target.port, target.username, target.password) == (
        "smtp.example.com", 587, "acme", "pw-1")
    assert target.allowed_targets == "10.0.0.0/8" and target.timeout_s == 7
    assert "pw-1" not in repr(target)
    assert (await tenants.branding("t-plat")).smtp is None
