"""Helpers for the notify tests: tenants, MessageStored events, the worker in-process, a
reader for the notification.* events it publishes, and readers/writers of the delivery claims
in the NATS KV bucket. Retry timings are shrunk via env."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from devstack.smtp_sink import Sink
from secmsg.notify.adapters import kv as claims_kv
from secmsg.notify.app import NotifyWorker
from secmsg.notify.service import delivery_key
from secmsg.notify.settings import NotifySettings
from secmsg.shared import bus, mongo
from secmsg.shared.events import (
    MessageStored,
    NotificationDeferred,
    NotificationFailed,
    NotificationSent,
    Recipient,
    decode_event,
    event_msg_id,
)
from secmsg.shared.settings import CommonSettings

T = TypeVar("T")

TENANT = "acme"
FOOTER = "Sent by ABC Medical of 123 ABC Street Beverly Hills, CA 90210, Call: (555) 555-7323"
DISCLAIMER = "Confidential: intended only for the named recipients."

NOTIFICATION_EVENTS = (NotificationSent, NotificationDeferred, NotificationFailed)

FAST = {
    "SECMSG_SMTP_TIMEOUT_S": "2",
    "SECMSG_NOTIFY_RETRY_BASE_S": "0.2",
    "SECMSG_NOTIFY_RETRY_MAX_S": "1",
    "SECMSG_NOTIFY_LEASE_S": "3",
    "SECMSG_NOTIFY_ACK_WAIT_S": "4",
    "SECMSG_NOTIFY_FETCH_TIMEOUT_S": "2",
    "SECMSG_NOTIFY_GRACEFUL_TIMEOUT_S": "3",
    "SECMSG_NOTIFY_TENANT_CACHE_S": "1",
}


async def eventually(probe: Callable[[], T | Awaitable[T]], *, timeout: float = 20.0,
                     what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def stored_event(*, to: list[str], cc: list[str] | None = None, subject: str = "Lab results",
                 sender: str = "alice@acme.example", received_at: datetime | None = None,
                 tenant: str = TENANT, **extra: Any) -> MessageStored:
    return MessageStored(
        tenant_id=tenant, message_id=uuid.uuid4().hex, sender=sender,
        recipients=[Recipient(address=a, kind="to") for a in to]
        + [Recipient(address=a, kind="cc") for a in cc or []],
        subject=subject, attachment_count=extra.pop("attachment_count", 2),
        expires_at=extra.pop("expires_at", datetime.now(UTC) + timedelta(days=30)),
        disclaimer=extra.pop("disclaimer", "Please do not forward."),
        received_at=received_at or datetime.now(UTC), **extra)


@pytest.fixture
def fast_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    return {**env, **FAST}


@pytest.fixture
async def tenant(mongo_db: Any) -> str:
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": TENANT, "name": "acme", "display_name": "Acme Medical",
        "created_at": datetime.now(UTC), "footer": FOOTER, "disclaimers": [DISCLAIMER]})
    return TENANT


class Bus:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.publisher = bus.EventPublisher(nc)

    async def publish(self, event: MessageStored, *, copy: str | None = None) -> None:
        # ``copy`` makes a second stream message of the same event (a redelivery in effect).
        parts = (copy,) if copy else ()
        await self.publisher.publish(event, event_msg_id(event, *parts))

    async def events(self, kind: str) -> list[Any]:
        """Every ``kind`` event in the stream so far (a fresh ephemeral consumer each time)."""
        js = self.nc.jetstream()
        sub = await js.pull_subscribe(f"secmsg.*.{kind}", stream="SECMSG",
                                      config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        out: list[Any] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(100, timeout=0.3)
                except TimeoutError:  # nats.errors.TimeoutError subclasses it
                    break
                for m in msgs:
                    out.append(decode_event(m.data, NOTIFICATION_EVENTS))
                    await m.ack()
        finally:
            await sub.unsubscribe()
        return out


@pytest.fixture
async def nbus(fast_env: dict[str, str]) -> AsyncIterator[Bus]:
    s = CommonSettings()
    nc = await bus.connect(s.nats_url, "notify-tests")
    await bus.ensure_stream(nc)
    yield Bus(nc)
    await nc.close()


def claim_key(tenant: str, message_id: str, address: str) -> str:
    """The KV key of one recipient's claim (what ``KvDeliveryRepo`` derives)."""
    return claims_kv.kv_key(delivery_key(tenant, message_id, address))


async def claims_bucket(nc: Any) -> KeyValue:
    """The claims bucket (created here if the worker has not started yet)."""
    ttl = NotifySettings().claims_ttl_s
    return await claims_kv.ensure_bucket(nc.jetstream(), ttl_s=ttl)


async def read_claim(nc: Any, tenant: str, message_id: str, address: str
                     ) -> dict[str, Any] | None:
    kv = await claims_bucket(nc)
    try:
        entry = await kv.get(claim_key(tenant, message_id, address))
    except KeyNotFoundError:
        return None
    return json.loads(entry.value or b"{}")


async def all_claims(nc: Any) -> dict[str, dict[str, Any]]:
    """Every claim in the bucket, by KV key."""
    kv = await claims_bucket(nc)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    return {k: json.loads((await kv.get(k)).value or b"{}") for k in keys}


async def write_claim(nc: Any, tenant: str, message_id: str, address: str,
                      doc: dict[str, Any]) -> None:
    """Put a claim as another worker would have left it (times as ISO-8601 strings)."""
    kv = await claims_bucket(nc)
    value = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in doc.items()}
    await kv.create(claim_key(tenant, message_id, address), json.dumps(value).encode())


@pytest.fixture
async def start_notify(fast_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                       ) -> AsyncIterator[Callable[..., Awaitable[NotifyWorker]]]:
    """Factory: the notify worker in this process, with extra env overrides."""
    started: list[NotifyWorker] = []

    async def start(**overrides: str) -> NotifyWorker:
        for k, v in overrides.items():
            monkeypatch.setenv(k, str(v))
        w = NotifyWorker(CommonSettings(), NotifySettings())
        await w.start()
        started.append(w)
        return w

    yield start
    for w in reversed(started):
        await w.stop()


def fix_sink_drop(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """devstack's "drop" fault reaches for ``session.transport``, which aiosmtpd's Session
    lacks (it's ``server.transport``); do the same drop here until devstack is fixed."""
    original = sink.handler.handle_DATA

    async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
        if sink.handler.faults.mode == "drop":
            with sink.handler.lock:
                sink.handler.faults.take()
            server.transport.close()
            return "421 4.4.2 Connection dropped"
        return await original(server, session, envelope)

    monkeypatch.setattr(sink.handler, "handle_DATA", handle_DATA)
