"""One tenant's SMTP outage does not stall the others: its deferred notifications leave the
hot consumer for the retry stream, its server is marked down after a hung connection, and
once it answers again every one of its notifications goes out exactly once.

Smaller scale than production (a hot window of 8 events, 2 connections per target, short
timeouts), which is exactly what made the old design stall: nak'ed events of the hanging
tenant filled the window and nothing else was delivered."""

from __future__ import annotations

import collections
import gc
import ssl
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import free_port
from devstack.smtp_sink import Sink, StallingProxy
from devstack.tls import ensure_cert
from secmsg.notify import retry
from secmsg.shared import mongo
from tests.notify.conftest import Bus, eventually, stored_event

pytestmark = pytest.mark.timeout(150)

A_MESSAGES, B_MESSAGES = 40, 12


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_cert(tmp_path / "tls")


@pytest.fixture
def a_sink(cert: tuple[Path, Path]) -> Iterator[Sink]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    s = Sink(free_port(), None, tls_context=ctx, require_starttls=True)
    s.start()
    yield s
    with warnings.catch_warnings():  # aiosmtpd leaves finished TLS sessions to the GC
        warnings.simplefilter("ignore", ResourceWarning)
        s.stop()
        gc.collect()


async def test_a_hanging_tenant_server_does_not_stall_other_tenants(
        tenant: str, mongo_db: Any, sink: Sink, a_sink: Sink, nbus: Bus, start_notify: Any,
        cert: tuple[Path, Path]) -> None:
    proxy = StallingProxy(a_sink.port)
    await proxy.start()
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "tenant-a", "name": "tenant-a", "display_name": "Tenant A",
        "created_at": datetime.now(UTC),
        "smtp": {"mode": "own", "host": "localhost", "port": proxy.port, "tls": "starttls"}})
    try:
        worker = await start_notify(
            SECMSG_SMTP_TIMEOUT_S="1.5", SECMSG_NOTIFY_LEASE_S="5",
            SECMSG_NOTIFY_CONCURRENCY="4", SECMSG_NOTIFY_MAX_ACK_PENDING="8",
            SECMSG_NOTIFY_SMTP_POOL_SIZE="2", SECMSG_NOTIFY_TARGET_SATURATED_WAIT_S="0.3",
            SECMSG_NOTIFY_TARGET_DOWN_S="1", SECMSG_NOTIFY_TARGET_DOWN_MAX_S="2",
            SECMSG_NOTIFY_RETRY_BASE_S="0.5", SECMSG_NOTIFY_RETRY_MAX_S="2",
            SECMSG_SMTP_ALLOWED_TARGETS="127.0.0.0/8,::1", SECMSG_SMTP_CA_FILE=str(cert[0]))
        proxy.stall()  # A's server takes TCP and never says a word
        a_events = [stored_event(to=[f"a{i}@example.org"], tenant="tenant-a")
                    for i in range(A_MESSAGES)]
        for ev in a_events:
            await nbus.publish(ev)
        await eventually(lambda: proxy.accepted_while_stalled >= 1, timeout=20,
                         what="notify trying A's hanging server")
        for i in range(B_MESSAGES):
            await nbus.publish(stored_event(to=[f"b{i}@example.org"], tenant=tenant))
        await eventually(lambda: len(sink.messages) == B_MESSAGES, timeout=60,
                         what="every notification of tenant B while A's server hangs")
        assert a_sink.messages == []  # A's are waiting, none got through the stalled proxy
        # A hung server holds at most its connections per target at a time, not handlers.
        assert proxy.accepted_while_stalled <= 2 * 4, proxy.accepted_while_stalled
        # The waiting is in the retry stream, not in the hot consumer's window.
        js = nbus.nc.jetstream()
        hot = await js.consumer_info("SECMSG", "notify-stored")
        assert hot.num_ack_pending <= 4, hot
        waiting = await js.consumer_info(retry.STREAM, retry.CONSUMER)
        assert waiting.num_ack_pending + waiting.num_pending >= 1, waiting

        proxy.resume()  # A's server answers again
        want = {f"a{i}@example.org" for i in range(A_MESSAGES)}
        await eventually(
            lambda: want <= {r for m in a_sink.messages for r in m.rcpt_tos},
            timeout=90, what="every notification of tenant A after its server returned")
        counts = collections.Counter(r for m in list(a_sink.messages) for r in m.rcpt_tos)
        assert all(counts[a] == 1 for a in want), {a: n for a, n in counts.items() if n != 1}
        sent = [e for e in await nbus.events("notification.sent") if e.tenant_id == "tenant-a"]
        assert sorted(e.recipient for e in sent) == sorted(want)
        assert worker.deliveries.unrecorded == 0
    finally:
        await proxy.stop()
