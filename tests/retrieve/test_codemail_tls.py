"""The sign-in code mail through a platform SMTP server that needs TLS (STARTTLS or implicit)
with a certificate from a private CA: retrieve (a real process) trusts SECMSG_SMTP_CA_FILE
like the other mailers, and without it refuses the certificate (nothing is sent)."""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.servers import free_port
from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from devstack.tls import ensure_cert
from tests.retrieve.helpers import BOB, TENANT, Seeder, last_code


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[Path, Path]:
    # Self-signed for 127.0.0.1: trusted only by whoever is given this file.
    return ensure_cert(tmp_path / "smtp-ca")


def _sink(cert: tuple[Path, Path], mode: str) -> Sink:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    kwargs: dict[str, Any] = ({"tls_context": ctx, "require_starttls": True}
                              if mode == "starttls" else {"ssl_context": ctx})
    return Sink(free_port(), None, **kwargs)


@pytest.fixture
def tls_sinks(private_ca: tuple[Path, Path]) -> Iterator[Callable[[str], Sink]]:
    started: list[Sink] = []

    def start(mode: str) -> Sink:
        s = _sink(private_ca, mode)
        s.start()
        started.append(s)
        return s

    yield start
    with warnings.catch_warnings():  # aiosmtpd leaves finished TLS sessions to the GC
        warnings.simplefilter("ignore", ResourceWarning)
        for s in started:
            s.stop()
        gc.collect()


async def _ask_code(svc: ServiceProc) -> None:
    async with httpx.AsyncClient(base_url=svc.base_url, verify=False, timeout=30) as c:
        r = await c.post("/v1/auth/code", json={"tenant_id": TENANT, "email": BOB})
        assert r.status_code == 202, r.text


async def _wait_for_mail(sink: Sink, seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if sink.handler.for_recipient(BOB.lower()) or sink.handler.for_recipient(BOB):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_code_mail_trusts_the_configured_ca(
        mode: str, services: Callable[..., ServiceProc], seeder: Seeder,
        tls_sinks: Callable[[str], Sink], private_ca: tuple[Path, Path]) -> None:
    await seeder.message()
    sink = tls_sinks(mode)
    svc = services("retrieve", SECMSG_SMTP_HOST="127.0.0.1", SECMSG_SMTP_PORT=sink.port,
                   SECMSG_SMTP_TLS=mode, SECMSG_SMTP_CA_FILE=private_ca[0],
                   SECMSG_SMTP_TIMEOUT_S=5)
    await _ask_code(svc)
    assert await _wait_for_mail(sink, 15), f"no code mail over {mode}"
    assert len(last_code(sink, BOB.lower())) == 8


async def test_code_mail_refuses_an_untrusted_certificate(
        services: Callable[..., ServiceProc], seeder: Seeder,
        tls_sinks: Callable[[str], Sink]) -> None:
    await seeder.message()
    sink = tls_sinks("starttls")
    svc = services("retrieve", SECMSG_SMTP_HOST="127.0.0.1", SECMSG_SMTP_PORT=sink.port,
                   SECMSG_SMTP_TLS="starttls", SECMSG_SMTP_TIMEOUT_S=5)
    await _ask_code(svc)
    # The send is tried right after the answer: wait until retrieve has given up on it.
    for _ in range(300):
        if "sign-in code not sent" in svc.log_path.read_text(errors="replace"):
            break
        await asyncio.sleep(0.05)
    log = svc.log_path.read_text(errors="replace")
    assert "sign-in code not sent" in log and "SMTP unavailable" in log, svc.tail()
    assert sink.messages == []
