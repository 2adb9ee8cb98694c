"""Fixtures: real servers on loopback, isolated per test.

* ``stack`` (session): FerretDB and versitygw (and a session NATS), started once.
* ``nats_server`` (per test): a fresh NATS with JetStream in its own temp dir, so no test sees
  another's stream or consumers; fault tests stop and restart it. It requires credentials,
  as in production: a user per service (``secmsg.shared.bus_users``) and ``admin``.
* ``env`` (per test): the ``SECMSG_*`` variables for this test -- its own database name,
  bucket, keyring and NATS (as ``admin``, credentials in the URL) -- which in-process apps
  read through ``monkeypatch``.
* ``sink`` (per test): a real SMTP server (aiosmtpd) capturing mail, with fault injection.
* ``services`` (per test): starts ``python -m secmsg.<name>`` processes with ``env``, each
  connecting to NATS as its own user.
* ``local_stack`` (session): ``python -m devstack.run`` (what ``./scripts/run`` starts) as a
  real process tree in a temporary ``.run`` folder, for the tests of what a newcomer meets
  (tests/deploy/test_local_stack.py) and of the mail it sends
  (tests/deliverability/test_local_stack_alignment.py): started once for both.
* ``browser`` (session): one headless Chromium (tests/webmail/browser.py says how it is
  launched here) for every browser test; each test opens its own context.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import NatsServer, Stack, ensure_binaries, free_port, make_nats, start_stack
from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from devstack.tls import ensure_cert
from secmsg.shared.bus_users import ADMIN
from secmsg.shared.crypto import KeyRing
from secmsg.shared.settings import CommonSettings
from tests.local_stack import LocalStack, running_local_stack

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_local_stack(tmp_path_factory.mktemp("run")) as started:
        yield started


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("servers"))
    yield s
    s.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = make_nats(ensure_binaries()["nats"], free_port(), tmp_path / "nats")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(free_port(), tmp_path / "mail")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_cert(tmp_path_factory.getbasetemp() / "tls")


@pytest.fixture
def env(stack: Stack, nats_server: NatsServer, sink: Sink, tls_cert: tuple[Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's configuration, also exported so in-process settings objects see it."""
    tag = uuid.uuid4().hex[:10]
    values = {
        **stack.env(),
        "SECMSG_ENVIRONMENT": "test",
        "SECMSG_LOG_LEVEL": "INFO",
        "SECMSG_NATS_URL": nats_server.url(ADMIN),
        "SECMSG_MONGO_DB": f"t_{tag}",
        "SECMSG_S3_BUCKET": f"t-{tag}",
        "SECMSG_KEYRING": KeyRing.generate_spec(1),
        "SECMSG_SMTP_HOST": "127.0.0.1",
        "SECMSG_SMTP_PORT": str(sink.port),
        "SECMSG_SMTP_TLS": "none",
        "SECMSG_RETRIEVE_TLS_CERT": str(tls_cert[0]),
        "SECMSG_RETRIEVE_TLS_KEY": str(tls_cert[1]),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> CommonSettings:
    return CommonSettings()


@pytest.fixture
def services(env: dict[str, str], nats_server: NatsServer,
             tmp_path: Path) -> Iterator[Callable[..., ServiceProc]]:
    """Factory: ``services("store", SECMSG_X="y")`` starts a service process (stopped after).
    Each connects to NATS as its own user, with only its permissions."""
    started: list[ServiceProc] = []

    def start(name: str, *, wait: bool = True, **extra_env: Any) -> ServiceProc:
        own = nats_server.service_env(name)
        extra = {k: str(v) for k, v in extra_env.items()}
        for k, v in own.items():  # a test passing ``env`` through keeps the service's user
            if k in extra and extra[k] == env.get(k):
                extra[k] = v
        svc = ServiceProc(name, {**env, **own}, tmp_path / f"{name}-{len(started)}.log",
                          free_port(), tls=(name == "retrieve"), extra_env=extra)
        if name == "retrieve":
            svc.env["SECMSG_RETRIEVE_PUBLIC_URL"] = svc.base_url
        svc.start(wait=wait)
        started.append(svc)
        return svc

    yield start
    for svc in reversed(started):
        svc.stop()


@pytest.fixture
async def mongo_db(settings: CommonSettings) -> AsyncIterator[Any]:
    from secmsg.shared.mongo import make_client

    client = make_client(settings)
    yield client[settings.mongo_db]
    await client.drop_database(settings.mongo_db)
    await client.close()


@pytest.fixture
async def platform(services: Callable[..., ServiceProc], mongo_db: Any, sink: Sink,
                   stack: Stack, settings: CommonSettings) -> AsyncIterator[Any]:
    """All four services as real processes against this test's servers, plus one tenant."""
    from secmsg.ingest.admin import create_api_key, create_tenant
    from tests.e2e.helpers import Platform

    # Short retry and lease times: a notify killed mid-send holds its claim for one lease.
    # Likewise an Idempotency-Key held by an ingest killed mid-request is taken over after
    # SECMSG_INGEST_IDEMPOTENCY_STALE_S (default 120 s): short here.
    fast = {"SECMSG_NOTIFY_RETRY_BASE_S": "0.5", "SECMSG_NOTIFY_RETRY_MAX_S": "2",
            "SECMSG_NOTIFY_LEASE_S": "8", "SECMSG_SMTP_TIMEOUT_S": "5",
            "SECMSG_INGEST_IDEMPOTENCY_HEARTBEAT_S": "1",
            "SECMSG_INGEST_IDEMPOTENCY_STALE_S": "5"}
    # All four start side by side (their start-up is mostly imports, one core each), then
    # each is waited for; retrieve is told ingest's address (the webmail sends secure replies
    # through it), known before ingest listens.
    procs = {name: services(name, wait=False, **fast) for name in ("store", "notify", "ingest")}
    procs["retrieve"] = services("retrieve", wait=False,
                                 SECMSG_RETRIEVE_INGEST_URL=procs["ingest"].base_url, **fast)
    for proc in procs.values():
        proc.wait_healthy()
    await create_tenant(mongo_db, tenant_id="acme", name="Acme Medical",
                        footer="Sent by Acme Medical of 123 ABC Street Beverly Hills, CA 90210, "
                               "Call: (555) 555-7323",
                        disclaimers=["Confidential: for the named recipients only."])
    key = await create_api_key(mongo_db, tenant_id="acme", label="e2e")
    return Platform(tenant="acme", api_key=key, db=mongo_db, sink=sink,
                    s3_data_dir=stack.s3_data_dir / settings.s3_bucket, procs=procs,
                    start_service=services)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """A ``playwright.async_api.Browser``; Playwright is imported only when a test asks."""
    from playwright.async_api import async_playwright, expect

    from tests.webmail.browser import CHROMIUM, CHROMIUM_ARGS

    # Pages answer after real work (Argon2, ingest, other services) on two shared cores: wait
    # longer than Playwright's 5 s before calling an expected page missing.
    expect.set_options(timeout=15_000)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()
