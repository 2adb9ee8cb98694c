# Over 400 lines: claims and owner leases: interdependent compare-and-set
"""notify's per-recipient delivery claims in a NATS JetStream Key-Value bucket.

Why KV and not MongoDB: every decision here is a compare-and-set on the entry's revision
(``create`` fails if the key exists, ``update(..., last=revision)`` fails if anyone wrote
since we read), which JetStream enforces on every deployment -- unlike FerretDB 1.x, whose
conditional updates are not atomic (see docs/design.md, "Atomicity"). It also takes the two
database writes per notification off MongoDB.

One entry per recipient, key ``<tenant>.<message_id>.<sha256(address lower)[:32]>`` (KV keys
allow only ``[-/_=.a-zA-Z0-9]``, and the address stays out of the key); the value is compact
JSON ``{state, attempts, lease_until, created_at, updated_at, reason?, smtp_target?,
sent_at?, retry_at?}`` with ISO-8601 UTC times. See ``service.py`` for what the states mean.

The bucket keeps one revision per key (history 1) on file storage; entries expire after
``SECMSG_NOTIFY_CLAIMS_TTL_S`` (max_age), which must outlive every redelivery of the event.

**Liveness leases.** Every claim names its ``owner`` (one id per process start). Each process
keeps a heartbeat key ``<owner>`` in the bucket ``SECMSG_NOTIFY_OWNERS`` (max_age
``OWNER_TTL_S``, rewritten every third of it). A ``sending`` claim is taken over when its
owner's heartbeat is gone -- a killed replica's claims are free within ``OWNER_TTL_S``, not
after the lease -- or when its lease ran out (a live owner stuck past ``LEASE_S``), or by its
own owner once nothing in that process holds it any more (a claim whose reply was lost).

**SMTP acceptances are never forgotten.** When ``sent`` cannot be written (NATS down), the
fact stays in this process (``_unrecorded``) and is written by a background task as soon as
NATS answers; until then this process treats the recipient as sent (never sends it again),
and other replicas see a live owner's claim and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from secmsg.notify.ports import Claim
from secmsg.shared import bus
from secmsg.shared.errors import DependencyUnavailable

log = logging.getLogger(__name__)

BUCKET = "SECMSG_DELIVERIES"
STREAM = f"KV_{BUCKET}"  # the stream JetStream keeps a bucket in
OWNERS_BUCKET = "SECMSG_NOTIFY_OWNERS"
OWNERS_STREAM = f"KV_{OWNERS_BUCKET}"
FINAL_STATES = ("sent", "failed")
KV_TIMEOUT_S = 5.0
# Compare-and-set rounds before giving up on a key: each lost round means another writer got
# in between, and only a handful of workers ever touch one recipient.
_CAS_TRIES = 10
# Claims taken but not yet resolved by a mark_*; only a cancelled send leaves one behind.
_MAX_REMEMBERED = 10_000

_Change = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def kv_key(key: str) -> str:
    """The bucket key for a port key ``<tenant>:<message_id>:<address lower>``."""
    tenant, message_id, address = key.split(":", 2)
    digest = sha256(address.lower().encode()).hexdigest()[:32]
    return f"{tenant}.{message_id}.{digest}"


def _ts(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if v is not None},
                      separators=(",", ":")).encode()


def _decode(raw: bytes | None) -> dict[str, Any]:
    return json.loads(raw) if raw else {}


@asynccontextmanager
async def _unavailable_as_503() -> AsyncIterator[None]:
    """NATS trouble (not connected, timeouts, JetStream errors) → retry the event later."""
    try:
        yield
    except InvalidKeyError:
        raise  # a bug in the key derivation, not an outage
    except (NatsError, OSError, TimeoutError) as exc:
        raise DependencyUnavailable(f"delivery claims unavailable ({type(exc).__name__})") \
            from exc


async def ensure_bucket(js: JetStreamContext, *, ttl_s: float, replicas: int = 1) -> KeyValue:
    """Create the claims bucket, or bind it and bring its TTL up to date; its replicas are
    only ever raised (``SECMSG_NATS_KV_REPLICAS``). Idempotent."""
    async with _unavailable_as_503():
        return await bus.ensure_kv(js, KeyValueConfig(
            bucket=BUCKET, description="secmsg notify: per-recipient delivery claims",
            history=1, storage=StorageType.FILE, ttl=ttl_s, replicas=replicas))


def new_owner_id() -> str:
    """This process's name in claims: host, pid and a random part (a restart is a new owner)."""
    host = re.sub(r"[^-_a-zA-Z0-9]", "-", socket.gethostname() or "host")[:40]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def ensure_owners_bucket(js: JetStreamContext, *, ttl_s: float,
                               replicas: int = 1) -> KeyValue:
    """The heartbeat bucket (one key per live notify process), TTL brought up to date and
    replicas only ever raised, as for the claims bucket."""
    async with _unavailable_as_503():
        return await bus.ensure_kv(js, KeyValueConfig(
            bucket=OWNERS_BUCKET, description="secmsg notify: live processes",
            history=1, storage=StorageType.FILE, ttl=ttl_s, replicas=replicas))


class KvDeliveryRepo:
    """``DeliveryRepo`` over a JetStream KV bucket; every state change is a CAS write."""

    def __init__(self, nc: NATS, kv: KeyValue, owners: KeyValue | None = None, *,
                 owner: str | None = None, owner_ttl_s: float = 5.0) -> None:
        self._nc = nc
        self._kv = kv
        self._owners = owners
        self.owner = owner or new_owner_id()
        self.owner_ttl_s = owner_ttl_s
        # Keys a coroutine of this process is working on (claimed, not yet resolved).
        self._inflight: set[str] = set()
        # SMTP accepted, ``sent`` not written yet (NATS trouble): k -> (now, smtp_target).
        self._unrecorded: dict[str, tuple[datetime, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # The (revision, doc) this repo wrote when it claimed a key: the mark_* that follows
        # tries its CAS against that revision directly, without reading the entry first. The
        # server still decides; if anyone wrote in between, the usual read-and-CAS loop runs.
        self._claimed: dict[str, tuple[int, dict[str, Any]]] = {}

    @classmethod
    async def open(cls, nc: NATS, *, ttl_s: float, replicas: int = 1, owner_ttl_s: float = 5.0,
                   timeout_s: float = KV_TIMEOUT_S) -> KvDeliveryRepo:
        js = nc.jetstream(timeout=timeout_s)
        kv = await ensure_bucket(js, ttl_s=ttl_s, replicas=replicas)
        owners = await ensure_owners_bucket(js, ttl_s=owner_ttl_s, replicas=replicas)
        repo = cls(nc, kv, owners, owner_ttl_s=owner_ttl_s)
        await repo.beat()
        return repo

    # -- liveness ----------------------------------------------------------------------------

    async def beat(self) -> None:
        """Say this process is alive (raises ``DependencyUnavailable`` if NATS does not hear)."""
        if self._owners is None:
            return
        self._check_connected()
        async with _unavailable_as_503():
            await self._owners.put(self.owner, b"1")

    async def _alive(self, owner: str) -> bool:
        if owner == self.owner:
            return True
        if self._owners is None:
            return True  # no liveness bucket: only the lease decides
        try:
            await self._owners.get(owner)
        except KeyNotFoundError:
            return False
        return True

    def start(self) -> None:
        """Run the heartbeat and the writer of unrecorded acceptances until ``stop()``."""
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="notify-heartbeat"),
                       asyncio.create_task(self._record_loop(), name="notify-record-sent")]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):  # last chance while the connection is open
            await self.flush_unrecorded()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._unrecorded:
            log.error("%d SMTP acceptance(s) could not be recorded before exit; those "
                      "recipients may be notified again", len(self._unrecorded))
        if self._owners is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._owners.delete(self.owner)  # our claims are free at once

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.beat()
            except DependencyUnavailable:
                pass  # NATS away: claims wait for it anyway; beat again as soon as it answers
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.owner_ttl_s / 4 if self._nc.is_connected else 0.2)

    async def _record_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self._unrecorded and self._nc.is_connected:
                try:
                    await self.flush_unrecorded()
                except Exception:
                    log.exception("recording SMTP acceptances failed")

    async def flush_unrecorded(self, only: str | None = None) -> None:
        """Write ``sent`` for acceptances kept in memory; ``DependencyUnavailable`` if not."""
        for k in [only] if only is not None else list(self._unrecorded):
            if k not in self._unrecorded:
                continue
            now, target = self._unrecorded[k]
            await self._write_sent(k, now=now, smtp_target=target)
            self._unrecorded.pop(k, None)
            self._inflight.discard(k)
            log.info("a kept SMTP acceptance is recorded now")

    @property
    def unrecorded(self) -> int:
        return len(self._unrecorded)

    async def ping(self) -> None:
        """Raise ``DependencyUnavailable`` unless the bucket answers (for /readyz)."""
        self._check_connected()
        async with _unavailable_as_503():
            await self._kv.status()

    def _check_connected(self) -> None:
        # While reconnecting, requests would sit in the client's buffer until they time out.
        if not self._nc.is_connected:
            raise DependencyUnavailable("delivery claims unavailable (NATS is not connected)")

    async def _get(self, k: str) -> tuple[int, dict[str, Any]] | None:
        try:
            entry = await self._kv.get(k)
        except KeyNotFoundError:  # also a deleted/purged key
            return None
        return entry.revision or 0, _decode(entry.value)

    async def _create(self, k: str, doc: dict[str, Any]) -> int | None:
        """The new entry's revision, or None if the key exists."""
        try:
            return await self._kv.create(k, _encode(doc))
        except KeyWrongLastSequenceError:
            return None

    async def _replace(self, k: str, doc: dict[str, Any], revision: int) -> int | None:
        """The new revision, or None if the entry is no longer at ``revision``."""
        try:
            return await self._kv.update(k, _encode(doc), last=revision)
        except KeyWrongLastSequenceError:
            return None

    def _remember(self, k: str, revision: int, doc: dict[str, Any]) -> None:
        if len(self._claimed) >= _MAX_REMEMBERED:
            del self._claimed[next(iter(self._claimed))]  # the oldest: dicts keep order
        self._claimed[k] = (revision, doc)

    async def claim(self, key: str, *, now: datetime, lease_until: datetime) -> Claim:
        k = kv_key(key)
        if k in self._unrecorded:
            # SMTP took it; only the record is missing. Never send again: write it now (or
            # let the event come back once NATS answers).
            await self.flush_unrecorded(only=k)
            got = await self._read(k)
            doc = got[1] if got else {}
            return Claim("final", "sent", max(1, int(doc.get("attempts", 1))),
                         smtp_target=doc.get("smtp_target"))
        self._check_connected()
        async with _unavailable_as_503():
            for _ in range(_CAS_TRIES):
                fresh = {"state": "sending", "attempts": 1, "lease_until": _ts(lease_until),
                         "owner": self.owner, "created_at": _ts(now), "updated_at": _ts(now)}
                if (rev := await self._create(k, fresh)) is not None:
                    self._remember(k, rev, fresh)
                    self._inflight.add(k)
                    return Claim("claimed", "sending", 1, lease_until)
                got = await self._get(k)
                if got is None:  # expired or deleted since our create: create again
                    continue
                revision, doc = got
                state = str(doc.get("state"))
                attempts = int(doc.get("attempts", 0))
                if state in FINAL_STATES:
                    return Claim("final", state, max(1, attempts), reason=doc.get("reason"),
                                 smtp_target=doc.get("smtp_target"))
                held_until = _dt(doc.get("lease_until"))
                owner = doc.get("owner")
                mine = owner == self.owner
                free = state == "deferred" or (state == "sending" and (
                    held_until is None or held_until < now
                    # ours, and no coroutine here holds it: a claim whose reply was lost
                    or (mine and k not in self._inflight)
                    # its process is gone: released now, not at the end of the lease
                    or (isinstance(owner, str) and not mine
                        and not await self._alive(owner))))
                if free:
                    taken = {**doc, "state": "sending", "attempts": attempts + 1,
                             "lease_until": _ts(lease_until), "owner": self.owner,
                             "updated_at": _ts(now), "retry_at": None}
                    if (rev := await self._replace(k, taken, revision)) is not None:
                        self._remember(k, rev, taken)
                        self._inflight.add(k)
                        return Claim("claimed", "sending", attempts + 1, lease_until)
                    continue  # someone else wrote first: look again
                # A live owner: look again when its heartbeat could have lapsed, or the lease.
                # Held by a coroutine of this very process (the event was delivered again while
                # its first copy is still being worked on): that copy finishes or hands the
                # recipient on within the SMTP timeout, so look again as soon, not after the
                # whole lease -- else the copy parked in the retry stream for LEASE_S (120 s),
                # and waiting for notify's consumers to settle timed out under load.
                until = held_until if state == "sending" else None
                if until is not None and isinstance(owner, str):
                    until = min(until, now + timedelta(seconds=self.owner_ttl_s))
                return Claim("busy", state, attempts, lease_until=until)
        return Claim("busy", "contended", 0)

    async def _read(self, k: str) -> tuple[int, dict[str, Any]] | None:
        async with _unavailable_as_503():
            return await self._get(k)

    def release(self, key: str) -> None:
        """Forget that this process works on ``key`` (its send was cancelled midway)."""
        k = kv_key(key)
        if k not in self._unrecorded:
            self._inflight.discard(k)

    async def _transition(self, k: str, change: _Change, *,
                          create: dict[str, Any] | None) -> None:
        """CAS loop on bucket key ``k``: ``change(doc)`` returns the new doc, or None to leave
        the entry as is."""
        self._check_connected()
        claimed = self._claimed.pop(k, None)
        async with _unavailable_as_503():
            if claimed is not None:
                # Most likely nobody wrote since our claim: one round trip instead of two.
                # A "leave it" answer from the remembered doc is not trusted (it may be stale);
                # the loop below decides from what the server holds then.
                revision, doc = claimed
                new = change(doc)
                if new is not None and await self._replace(k, new, revision) is not None:
                    return
            for _ in range(_CAS_TRIES):
                got = await self._get(k)
                if got is None:
                    if create is None or await self._create(k, create) is not None:
                        return
                    continue
                revision, doc = got
                new = change(doc)
                if new is None or await self._replace(k, new, revision) is not None:
                    return
        raise DependencyUnavailable("delivery claim kept changing under us; retrying later")

    async def mark_sent(self, key: str, *, now: datetime, smtp_target: str) -> None:
        """Record ``sent``. If NATS does not take it, the fact is kept in this process (and
        written as soon as NATS answers) before ``DependencyUnavailable`` is raised."""
        k = kv_key(key)
        try:
            await self._write_sent(k, now=now, smtp_target=smtp_target)
        except DependencyUnavailable:
            self._unrecorded[k] = (now, smtp_target)
            raise
        self._unrecorded.pop(k, None)
        self._inflight.discard(k)

    async def _write_sent(self, k: str, *, now: datetime, smtp_target: str) -> None:
        fields = {"state": "sent", "lease_until": None, "updated_at": _ts(now),
                  "sent_at": _ts(now), "smtp_target": smtp_target, "reason": None,
                  "retry_at": None}

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            # The SMTP server accepted the mail: that is the truth whatever the entry says.
            return None if doc.get("state") == "sent" else {**doc, **fields}

        await self._transition(k, change, create={"attempts": 1, "created_at": _ts(now),
                                                  **fields})

    async def mark_deferred(self, key: str, *, now: datetime, reason: str,
                            retry_at: datetime) -> None:
        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            # Only our own claim: never turn a concurrent worker's final state back.
            if doc.get("state") != "sending":
                return None
            return {**doc, "state": "deferred", "lease_until": None, "updated_at": _ts(now),
                    "reason": reason, "retry_at": _ts(retry_at)}

        await self._transition(kv_key(key), change, create=None)
        self._inflight.discard(kv_key(key))

    async def mark_failed(self, key: str, *, now: datetime, reason: str) -> None:
        fields = {"state": "failed", "lease_until": None, "updated_at": _ts(now),
                  "reason": reason, "retry_at": None}

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc.get("state") in FINAL_STATES:
                return None
            return {**doc, **fields}

        await self._transition(kv_key(key), change, create={"attempts": 1,
                                                            "created_at": _ts(now), **fields})
        self._inflight.discard(kv_key(key))
