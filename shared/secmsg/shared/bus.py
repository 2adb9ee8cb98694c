"""Event bus plumbing over NATS JetStream: connection, the stream, publishing with dedupe.

Publishing always waits for the JetStream acknowledgement (the event is on disk in the stream)
and sets ``Nats-Msg-Id`` to a deterministic id, so a retried publish inside the stream's
duplicate window is dropped by the server instead of being delivered twice.

Every service connects as its own NATS user (``SECMSG_NATS_USER`` / ``SECMSG_NATS_PASSWORD``,
permissions in ``bus_users.py``) with its own reply inbox ``_INBOX.<user>``, so no service can
read another's replies (pull-consumer deliveries travel on them), optionally over TLS
(``tls://`` URLs, ``SECMSG_NATS_TLS_CA_FILE``).

Replication: streams and KV buckets are created with the configured replica count
(``SECMSG_NATS_STREAM_REPLICAS``, ``SECMSG_NATS_KV_REPLICAS``) and later starts only ever
raise it: a stream an operator scaled up is never scaled down, recreated or deleted here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from secmsg.shared import subjects, telemetry
from secmsg.shared.errors import DependencyUnavailable, PublishUnconfirmed

if TYPE_CHECKING:
    from secmsg.shared.settings import CommonSettings

log = logging.getLogger(__name__)

STREAM_CONFIG = StreamConfig(
    name=subjects.STREAM,
    subjects=subjects.STREAM_SUBJECTS,
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    discard=DiscardPolicy.OLD,
    max_age=subjects.MAX_AGE_S,
    duplicate_window=subjects.DUPLICATE_WINDOW_S,
)


def _tls_context(common: CommonSettings) -> ssl.SSLContext | None:
    if common.nats_tls_ca_file is None and not common.nats_url.lstrip().startswith("tls://"):
        return None
    ctx = ssl.create_default_context(cafile=common.nats_tls_ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def inbox_prefix(user: str | None) -> str:
    """The reply subjects of one user: ``_INBOX.<user>`` (plain ``_INBOX`` without a user)."""
    return f"_INBOX.{user}" if user else "_INBOX"


def servers(url: str) -> list[str]:
    """``SECMSG_NATS_URL`` may list several servers, comma-separated (one per cluster node)."""
    return [u.strip() for u in url.split(",") if u.strip()]


def subscriber_inbox(common: CommonSettings) -> bytes:
    """``inbox_prefix`` for FastStream JetStream subscribers: FastStream defaults to the
    shared ``_INBOX.`` rather than the connection's, which the service's user cannot read."""
    return f"{inbox_prefix(common.nats_user)}.".encode()


def connect_options(common: CommonSettings) -> dict[str, Any]:
    """Credentials, TLS and inbox for ``connect``/``nats.connect`` from the settings."""
    opts: dict[str, Any] = {"inbox_prefix": inbox_prefix(common.nats_user)}
    if common.nats_user:
        opts["user"] = common.nats_user
        opts["password"] = common.nats_password
    if (ctx := _tls_context(common)) is not None:
        opts["tls"] = ctx
    return opts


def broker_options(common: CommonSettings) -> dict[str, Any]:
    """The same for FastStream's ``NatsBroker`` (credentials and TLS go in ``security``)."""
    from faststream.nats import NatsSecurity, NatsUserPassword

    ctx = _tls_context(common)
    security: NatsSecurity | None = None
    if common.nats_user:
        security = NatsUserPassword(common.nats_user, common.nats_password or "",
                                    ssl_context=ctx)
    elif ctx is not None:
        security = NatsSecurity(ssl_context=ctx)
    return {"inbox_prefix": inbox_prefix(common.nats_user), "security": security}


async def connect(url: str, name: str, **kwargs: Any) -> NATS:
    """Connect (reconnecting for ever afterwards); pass ``**connect_options(settings)``."""
    try:
        return await nats.connect(servers(url), name=name, max_reconnect_attempts=-1,
                                  reconnect_time_wait=1, connect_timeout=3, **kwargs)
    except (NatsError, OSError) as exc:
        raise DependencyUnavailable(f"NATS unavailable at start-up ({type(exc).__name__})") from exc


def keep_replicas(name: str, existing: int | None, wanted: int) -> int:
    """The replica count to run ``name`` with: never fewer than it has (warns instead)."""
    have = existing or 1
    if wanted < have:
        log.warning("%s has %d replicas, more than the %d configured: keeping %d (lower it "
                    "with `nats stream edit %s --replicas N` if that is really meant)",
                    name, have, wanted, have, name)
        return have
    return wanted


# What this code relies on in the SECMSG stream; anything else (limits, placement...) is the
# operator's to tune and left as found.
_MANAGED = ("subjects", "retention", "discard", "max_age", "duplicate_window")


def _differs(have: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(have, float | int):
        return abs(have - want) > 1e-3  # durations come back from nanoseconds
    return bool(have != want)


async def _reconcile(js: JetStreamContext, info: StreamInfo, fields: dict[str, Any],
                     replicas: int, storage: StorageType | None = None) -> StreamInfo:
    """Update only the ``fields`` that differ and raise the replicas; never lower them.
    Storage cannot change on a live stream: a mismatch is logged, not forced."""
    have = info.config
    fields = {k: v for k, v in fields.items() if v is not None}
    fields["num_replicas"] = keep_replicas(have.name or "?", have.num_replicas, replicas)
    if storage is not None and have.storage != storage:
        log.warning("%s uses %s storage, not %s; left as it is", have.name, have.storage,
                    storage)
    changed = {k: v for k, v in fields.items() if _differs(getattr(have, k), v)}
    if not changed:
        return info
    log.info("updating stream %s: %s", have.name, ", ".join(sorted(changed)))
    return await js.update_stream(have.evolve(**changed))


async def ensure_stream(nc: NATS, *, replicas: int = 1,
                        config: StreamConfig = STREAM_CONFIG) -> StreamInfo:
    """Create the stream (``SECMSG`` by default) with ``replicas``, or bring the settings this
    code depends on up to date. Idempotent; never deletes, recreates or scales down."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(config.name or "")
    except NotFoundError:
        try:
            return await js.add_stream(config.evolve(num_replicas=replicas))
        except BadRequestError:  # another service created it in between
            info = await js.stream_info(config.name or "")
    return await _reconcile(js, info, {k: getattr(config, k) for k in _MANAGED}, replicas,
                            config.storage)


async def ensure_kv(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Create the KV bucket, or bind it and bring its TTL and replicas up to ``config``
    (replicas only ever raised). Idempotent; never deletes or recreates the bucket."""
    stream = f"KV_{config.bucket}"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            return await js.create_key_value(config)
        except BadRequestError:  # another replica created it in between
            info = await js.stream_info(stream)
    await _reconcile(js, info, {"max_age": config.ttl}, config.replicas)
    return await js.key_value(config.bucket)


class EventPublisher:
    def __init__(self, nc: NATS, timeout: float = 5.0):
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout

    async def publish(self, event: BaseModel, msg_id: str) -> bool:
        """Publish durably; returns False when the server dropped it as a duplicate.

        Raises ``DependencyUnavailable`` when nothing was sent (not connected), and
        ``PublishUnconfirmed`` when the request went out but no acknowledgement came back.
        """
        subj = subjects.subject_for(event)
        if not self._nc.is_connected:
            raise DependencyUnavailable(f"event bus unavailable, could not publish {subj} "
                                        "(NATS is not connected)")
        kind = str(getattr(event, "kind", type(event).__name__))
        headers = {"Nats-Msg-Id": msg_id}
        try:
            # The client bounds the wait for the ack by ``timeout``; the outer bound also
            # covers anything before it (a write, a reconnect), so a caller -- a submission
            # waiting to answer -- never waits longer than this for an answer.
            async with asyncio.timeout(self._timeout + 1):
                with telemetry.publish_span(subj, headers):
                    ack = await self._js.publish(subj, event.model_dump_json().encode(),
                                                 timeout=self._timeout, stream=subjects.STREAM,
                                                 headers=headers)
        except (NatsError, OSError, TimeoutError) as exc:
            telemetry.EVENTS_PUBLISHED.labels(kind, "failed").inc()
            raise PublishUnconfirmed(
                f"event bus did not confirm {subj} ({type(exc).__name__})"
            ) from exc
        telemetry.EVENTS_PUBLISHED.labels(kind, "duplicate" if ack.duplicate else "published"
                                          ).inc()
        return not ack.duplicate

    async def ping(self) -> None:
        if not self._nc.is_connected:
            raise DependencyUnavailable("NATS is not connected")
        try:
            await self._js.stream_info(subjects.STREAM)
        except (NatsError, OSError, TimeoutError) as exc:
            raise DependencyUnavailable(f"JetStream unavailable ({type(exc).__name__})") from exc
