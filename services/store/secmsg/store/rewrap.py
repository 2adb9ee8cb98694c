"""The per-tenant re-wrap job (``key.rotation_requested``): move every data key of a tenant
that is on an older key generation to the requested one (``KeyRing.rewrap``; the ciphertext
in the object store never changes).

Progress lives in ``key_rotations`` (``_id`` = rotation id): ``state`` running -> done (or
failed, with a fixed ``reason``), ``total`` (stored messages of the tenant when the job
started; set to ``done`` at the end, since messages come and go meanwhile -- new ones are
already wrapped under the new generation), ``done`` (messages checked), ``rewrapped``
(objects moved), ``cursor`` (the last message checked, in ``_id`` order), ``updated_at``,
``finished_at``. Progress is written every ``progress_every`` messages.

Resumable and idempotent: a redelivered or restarted job continues after the saved
``cursor`` with the saved ``done``; messages checked after the last save are checked again,
and every object already on the generation is skipped, so the counts end right.

FerretDB caveat: the per-message update of ``objects`` is a conditional update ("only where
each ``wrapped_key`` is still the one read"), atomic on MongoDB but not on FerretDB 1.x,
which writes the whole document back without re-checking the filter. So the job takes the
message's purge claim (insert-only, atomic everywhere) for the read-modify-write, as every
other writer of a stored message document does (purge, recall, expiry change); the claim
keeps those apart. What remains: a writer outside store, or a claim holder that outlives its
lease (``SECMSG_STORE_PURGE_LEASE_S``), could still interleave with it on FerretDB.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import IntegrityError, PermanentError
from secmsg.shared.events import KeyRotationRequested
from secmsg.store import audit as audit_docs
from secmsg.store.control import ClaimHeld
from secmsg.store.ports import AuditRepo, Doc, MessageRepo, PurgeClaims, RotationRepo

log = logging.getLogger(__name__)

REWRAPPED = Counter("secmsg_store_keys_rewrapped_total", "Data keys moved to a newer generation")
CLAIM_POLL_S = 0.05


def _now() -> datetime:
    return datetime.now(UTC)


def pending_changes(doc: Doc, *, tenant_id: str, keyring: KeyRing,
                    generation: int) -> dict[int, tuple[str, str]]:
    """``{object index: (old wrapped key, new wrapped key)}`` for the objects still on an
    older generation (raises ``IntegrityError`` if one does not unwrap)."""
    changes: dict[int, tuple[str, str]] = {}
    for i, obj in enumerate(doc.get("objects", [])):
        old = obj["wrapped_key"]
        if keyring.wrapped_generation(old) < generation:
            changes[i] = (old, keyring.rewrap(tenant_id, obj["object_id"], old, generation))
    return changes


def _needs_work(doc: Doc, *, keyring: KeyRing, generation: int) -> bool:
    return any(keyring.wrapped_generation(o["wrapped_key"]) < generation
               for o in doc.get("objects", []))


async def _claim(mid: str, *, claims: PurgeClaims, owner: str, lease_s: float) -> None:
    """Wait (up to one lease) for the message's claim; a purge or recall holds it briefly."""
    deadline = asyncio.get_running_loop().time() + lease_s
    while True:
        at = _now()
        if await claims.claim(mid, owner=owner, now=at,
                              lease_until=at + timedelta(seconds=lease_s)):
            return
        if asyncio.get_running_loop().time() >= deadline:
            raise ClaimHeld("message is held by another worker past one lease")
        await asyncio.sleep(CLAIM_POLL_S)


async def _rewrap_message(mid: str, *, tenant_id: str, messages: MessageRepo,
                          claims: PurgeClaims, keyring: KeyRing, generation: int, owner: str,
                          lease_s: float) -> int:
    await _claim(mid, claims=claims, owner=owner, lease_s=lease_s)
    try:
        doc = await messages.get(mid)  # re-read under the claim
        if doc is None or doc.get("state") != "stored":
            return 0  # purged or recalled meanwhile: nothing left to re-wrap
        changes = pending_changes(doc, tenant_id=tenant_id, keyring=keyring,
                                  generation=generation)
        if changes and not await messages.set_wrapped_keys(mid, changes):
            return 0  # changed under us after all (a writer outside the claim); next run
        return len(changes)
    finally:
        await claims.release(mid)


async def rotate_keys(*, event: KeyRotationRequested, messages: MessageRepo,
                      claims: PurgeClaims, rotations: RotationRepo, audit: AuditRepo,
                      keyring: KeyRing, owner: str, lease_s: float, page_size: int,
                      progress_every: int, pause_s: float = 0.0) -> Doc:
    """Run (or resume) one rotation to its end; returns the final ``key_rotations`` fields."""
    rid, tenant, gen = event.rotation_id, event.tenant_id, event.generation
    rot = await rotations.get(rid)
    if rot is None:  # store owns key_rotations: the record starts when the job is taken up
        await rotations.create({"_id": rid, "tenant_id": tenant, "generation": gen,
                                "state": "requested", "total": None, "done": 0,
                                "started_at": event.occurred_at, "updated_at": _now(),
                                "finished_at": None, "requested_by": event.requested_by})
        rot = await rotations.get(rid) or {}
    if rot.get("tenant_id") != tenant or rot.get("generation", gen) != gen:
        raise PermanentError("key rotation request does not match its record")
    if rot.get("state") in ("done", "failed"):
        if rot.get("state") == "done":
            await audit.insert(_audit(event, rot))
        log.info("key rotation already %s", rot.get("state"))
        return rot
    if rot.get("state") != "running" or rot.get("total") is None:
        rot = {**rot, "state": "running", "total": await messages.count_stored(tenant),
               "done": 0, "rewrapped": 0, "cursor": None, "updated_at": _now()}
        await rotations.update(rid, {k: rot[k] for k in
                                     ("state", "total", "done", "rewrapped", "cursor",
                                      "updated_at")})
        log.info("key rotation started", extra={"event": "key.rotation_requested"})
    else:
        log.info("key rotation resumed", extra={"event": "key.rotation_requested"})
    cursor: str | None = rot.get("cursor")
    done: int = rot.get("done") or 0
    rewrapped: int = rot.get("rewrapped") or 0
    since_save = 0
    try:
        while page := await messages.stored_page(tenant, after=cursor, limit=page_size):
            for doc in page:
                if _needs_work(doc, keyring=keyring, generation=gen):
                    n = await _rewrap_message(doc["_id"], tenant_id=tenant, messages=messages,
                                              claims=claims, keyring=keyring, generation=gen,
                                              owner=owner, lease_s=lease_s)
                    rewrapped += n
                    REWRAPPED.inc(n)
                cursor, done, since_save = doc["_id"], done + 1, since_save + 1
                if since_save >= progress_every:
                    await rotations.update(rid, {"done": done, "rewrapped": rewrapped,
                                                 "cursor": cursor, "updated_at": _now()})
                    since_save = 0
                if pause_s:
                    await asyncio.sleep(pause_s)
    except (IntegrityError, ValueError):
        # A data key that does not unwrap (corrupt, or its master version left the keyring):
        # retrying cannot help. The fixed reason is all the record says.
        await rotations.update(rid, {"state": "failed", "reason": "unwrap_failed",
                                     "done": done, "rewrapped": rewrapped, "cursor": cursor,
                                     "updated_at": _now(), "finished_at": _now()})
        raise PermanentError("key rotation failed: a data key did not unwrap") from None
    end = _now()
    final: dict[str, Any] = {"state": "done", "total": done, "done": done,
                             "rewrapped": rewrapped, "cursor": cursor, "updated_at": end,
                             "finished_at": end}
    await rotations.update(rid, final)
    rot = {**rot, **final}
    await audit.insert(_audit(event, rot))
    log.info("key rotation done: %d messages checked, %d data keys re-wrapped", done,
             rewrapped, extra={"event": "key.rotated"})
    return rot


def _audit(event: KeyRotationRequested, rot: Doc) -> Doc:
    return audit_docs.key_rotated(
        tenant_id=event.tenant_id, rotation_id=event.rotation_id, generation=event.generation,
        actor=event.requested_by, messages=int(rot.get("done") or 0),
        objects=int(rot.get("rewrapped") or 0), at=rot.get("finished_at") or _now())
