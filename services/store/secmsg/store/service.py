# Over 400 lines: record, deliveries, audit and purge share helpers and one test API.
"""The store's logic: plain async functions over the ports, no framework in sight.

Every function is idempotent: JetStream delivers at least once and a replica may die at any
line, so running one again (or on two replicas at once) must end in the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from secmsg.shared import logs
from secmsg.shared.blobstore import OBJECT_KEY_RE, OBJECT_ROOT, message_prefix, object_key
from secmsg.shared.crypto import ciphertext_size
from secmsg.shared.documents import MailboxDoc, mailbox_key
from secmsg.shared.errors import IntegrityError, InvalidInput, NotFound, PermanentError
from secmsg.shared.events import (
    AuditRecorded,
    MessageOpened,
    MessageReceived,
    MessageStored,
    NotificationBounced,
    NotificationDeferred,
    event_msg_id,
)
from secmsg.shared.ids import is_message_id
from secmsg.store import audit as audit_docs
from secmsg.store import expiry
from secmsg.store.ports import (
    AuditEvent,
    AuditRepo,
    BlobStore,
    BounceUpdate,
    DeliveryEvent,
    DeliveryRepo,
    DeliveryUpdate,
    Doc,
    MessageRepo,
    Publisher,
    PurgeClaims,
    StatusEvent,
    TenantPolicies,
    UndeliverableRepo,
)

log = logging.getLogger(__name__)


STORED = Counter("secmsg_store_messages_stored_total", "Messages recorded (first time)")
PURGED = Counter("secmsg_store_messages_purged_total",
                 "Messages purged (expired or past the tenant's retention)")
ORPHANS = Counter("secmsg_store_orphans_deleted_total", "Orphaned objects deleted")
DELIVERIES = Counter("secmsg_store_deliveries_total",
                     "Delivery states recorded (first time each), by tenant and state",
                     ["tenant", "state"])



def _now() -> datetime:
    return datetime.now(UTC)


# --- message.received -> messages doc + message.stored ------------------------------------


async def _check_objects(event: MessageReceived, blobs: BlobStore) -> None:
    """The commit: every staged object is there, complete, and where this message owns it."""
    if not is_message_id(event.message_id):
        raise InvalidInput("message_id is not 32 lowercase hex characters")
    seen: set[str] = set()
    for obj in event.objects:
        if not is_message_id(obj.object_id) or obj.object_id in seen:
            raise InvalidInput(f"object id {obj.object_id!r} is malformed or repeated")
        seen.add(obj.object_id)
        # Refuse keys outside this tenant's message folder: an event must never adopt (or
        # later purge) someone else's object.
        if obj.key != object_key(event.tenant_id, event.message_id, obj.object_id):
            raise InvalidInput(f"object {obj.object_id} has a key outside its message")
        expected = ciphertext_size(obj.size, obj.segment_size)
        if obj.inline is not None:  # its ciphertext came with the event: nothing to ask S3
            actual = len(obj.inline)
        else:
            try:
                actual = await blobs.size(obj.key)
            except NotFound:
                raise PermanentError(
                    f"object {obj.object_id} is missing from the store") from None
        if actual != expected:
            raise IntegrityError(
                f"object {obj.object_id} has {actual} bytes, expected {expected}")


def message_document(event: MessageReceived, *, stored_at: datetime) -> Doc:
    addresses: list[str] = []
    for r in event.recipients:
        low = r.address.lower()
        if low not in addresses:
            addresses.append(low)
    return {
        "_id": event.message_id,
        "tenant_id": event.tenant_id,
        "sender": event.sender,
        "submitted_by": event.submitted_by,
        "recipients": [r.model_dump() for r in event.recipients],
        "recipient_addresses": addresses,
        "subject": event.subject,
        "objects": [o.model_dump(exclude={"inline"}) for o in event.objects],
        # Small objects' ciphertext, kept here instead of in S3 (purge and recall unset it).
        "inline": {o.object_id: o.inline for o in event.objects if o.inline is not None},
        "attachment_count": sum(1 for o in event.objects if o.role == "attachment"),
        "total_size": sum(o.size for o in event.objects),
        "disclaimer": event.disclaimer,
        "expires_at": event.expires_at,
        "received_at": event.occurred_at,
        "stored_at": stored_at,
        "state": "stored",
        "purged_at": None,
        "notify": event.notify,
    }


def stored_event(doc: Doc) -> MessageStored:
    return MessageStored(
        tenant_id=doc["tenant_id"], message_id=doc["_id"], occurred_at=doc["stored_at"],
        sender=doc["sender"], recipients=doc["recipients"], subject=doc["subject"],
        attachment_count=doc["attachment_count"], expires_at=doc.get("expires_at"),
        disclaimer=doc.get("disclaimer"), received_at=doc["received_at"],
        notify=doc.get("notify", True))


async def record_message(*, event: MessageReceived, messages: MessageRepo, blobs: BlobStore,
                         publisher: Publisher, audit: AuditRepo | None = None,
                         now: datetime | None = None) -> bool:
    """``record_messages`` for one event: True if newly recorded."""
    return (await record_messages(events=[event], messages=messages, blobs=blobs,
                                  publisher=publisher, audit=audit, now=now))[0]


async def record_messages(*, events: Sequence[MessageReceived], messages: MessageRepo,
                          blobs: BlobStore, publisher: Publisher, audit: AuditRepo | None = None,
                          now: datetime | None = None) -> list[bool]:
    """Commit, record and announce a batch of received messages; per event, newly recorded?

    One unordered ``insert_many`` for the batch, no read first: the unique ``_id`` says
    "already recorded" by colliding, and only the collided ones are read back (redelivery,
    another replica, a recall tombstone). Then one audit ``insert_many`` (``message.accepted``,
    insert-once, so a crash after the insert still leaves it) and the ``message.stored``
    publishes (same Nats-Msg-Id on a repeat: the server drops it). A message recalled
    meanwhile (``state: "recalled"``, also a tombstone of a recall that came first) is never
    announced again. Any error raises for the whole batch; the worker then handles each event
    alone, so one bad event costs the others nothing. ``audit`` may be left out only by tests
    of the record itself.
    """
    at = now or _now()
    checked = await asyncio.gather(*(_check_objects(e, blobs) for e in events),
                                   return_exceptions=True)
    fresh = [e for e, c in zip(events, checked, strict=True) if c is None]
    docs = [message_document(e, stored_at=at) for e in fresh]
    collided = await messages.insert_many(docs)
    records: dict[str, Doc] = {}
    created: set[int] = set()  # indexes into ``events``
    fresh_idx = [i for i, c in enumerate(checked) if c is None]
    for n, d in enumerate(docs):
        if n not in collided and d["_id"] not in records:
            records[d["_id"]] = d
            created.add(fresh_idx[n])
    for e, c in zip(events, checked, strict=True):
        if e.message_id in records:
            continue
        doc = await messages.get(e.message_id)
        if doc is None:  # the objects check failed and nothing is on record: that error
            if isinstance(c, BaseException):
                raise c
            raise PermanentError("message vanished right after a duplicate insert")
        records[e.message_id] = doc
    for e in events:
        if records[e.message_id]["tenant_id"] != e.tenant_id:
            raise PermanentError("message id already recorded for another tenant")
    if audit is not None:
        await audit.insert_many([audit_docs.accepted(e) for e in events])
    announce = [stored_event(doc) for doc in records.values() if doc.get("state") == "stored"]
    await asyncio.gather(*(publisher.publish(out, event_msg_id(out)) for out in announce))
    for i, e in enumerate(events):
        # One line per message, under its own id (a batch has no single correlation id).
        logs.correlation_id.set(e.message_id)
        logs.tenant_id.set(e.tenant_id)
        state = records[e.message_id].get("state")
        if i in created:
            STORED.inc()
            log.info("message stored", extra={"event": "message.stored"})
        elif state == "stored":
            log.info("message was already stored; re-announced",
                     extra={"event": "message.stored"})
        else:
            log.info("message already %s; not announcing it again", state)
    return [i in created for i in range(len(events))]


# --- notification.* -> delivery_status -------------------------------------------------------


def delivery_update(event: StatusEvent, *, now: datetime) -> DeliveryUpdate:
    state = event.kind.removeprefix("notification.")
    fields: dict[str, Any] = {
        "tenant_id": event.tenant_id,
        "message_id": event.message_id,
        "recipient": event.recipient.lower(),
        "state": state,
        "attempt": event.attempt,
        "reason": getattr(event, "reason", None),
        "occurred_at": event.occurred_at,
        "updated_at": now,
    }
    if isinstance(event, NotificationDeferred):
        fields["retry_at"] = event.retry_at
    return DeliveryUpdate(delivery_id=f"{event.message_id}:{event.recipient.lower()}",
                          fields=fields, final=state != "deferred", attempt=event.attempt)


def bounce_update(event: NotificationBounced, *, now: datetime) -> BounceUpdate:
    # No ``attempt``: the status keeps the one of the delivery that bounced.
    fields: dict[str, Any] = {
        "tenant_id": event.tenant_id,
        "message_id": event.message_id,
        "recipient": event.recipient.lower(),
        "state": "bounced",
        "reason": event.reason,
        "bounce_status": event.status,
        "hard": event.hard,
        "occurred_at": event.occurred_at,
        "updated_at": now,
    }
    return BounceUpdate(delivery_id=f"{event.message_id}:{event.recipient.lower()}",
                        fields=fields, hard=event.hard)


def undeliverable_doc(event: NotificationBounced) -> Doc:
    address = event.recipient.lower()
    return {"_id": f"{event.tenant_id}:{address}", "tenant_id": event.tenant_id,
            "address": address, "status": event.status, "message_id": event.message_id,
            "at": event.occurred_at}


async def record_delivery(*, event: DeliveryEvent, deliveries: DeliveryRepo,
                          now: datetime | None = None) -> bool:
    """Apply a delivery state; ``sent``/``failed`` are final and a late ``deferred`` loses."""
    if isinstance(event, NotificationBounced):
        return (await record_deliveries(events=[event], deliveries=deliveries, now=now))[0]
    u = delivery_update(event, now=now or _now())
    applied = await deliveries.record(delivery_id=u.delivery_id, fields=u.fields,
                                      final=u.final, attempt=u.attempt)
    if not applied:
        log.info("delivery state %s ignored: a final or newer state is on file",
                 u.fields["state"])
    return applied


def collapse_deliveries(updates: Sequence[DeliveryUpdate]) -> list[int]:
    """The index of the one update that stands for each recipient of a batch, ascending.

    The same rules as applying them one at a time in stream order: the first final state
    wins; with none, the deferral of the highest attempt (the later one on a tie). The others
    would not have been applied.
    """
    best: dict[str, int] = {}
    for i, u in enumerate(updates):
        j = best.get(u.delivery_id)
        if j is None:
            best[u.delivery_id] = i
            continue
        kept = updates[j]
        if kept.final:
            continue
        if u.final or u.attempt >= kept.attempt:
            best[u.delivery_id] = i
    return sorted(best.values())


async def record_deliveries(*, events: Sequence[DeliveryEvent], deliveries: DeliveryRepo,
                            audit: AuditRepo | None = None,
                            undeliverable: UndeliverableRepo | None = None,
                            now: datetime | None = None) -> list[bool]:
    """A batch of delivery states (in stream order) in a few round trips; per event, applied?

    Several events for one recipient collapse first (see ``collapse_deliveries``), so the
    repository sees one update per recipient and the batch ends where applying the events one
    at a time would have. Bounces override the state on file (``DeliveryRepo.record_many``);
    a hard one also marks the address undeliverable for the tenant (first report wins). Every
    event, applied or not, is an audit fact: one unordered insert for the batch, deterministic
    ids, so a redelivered batch adds nothing. ``audit`` and ``undeliverable`` may be left out
    only by tests of the state rules alone.
    """
    at = now or _now()
    status_idx = [i for i, e in enumerate(events) if not isinstance(e, NotificationBounced)]
    updates = [delivery_update(events[i], now=at) for i in status_idx]  # type: ignore[arg-type]
    bounce_idx: list[int] = []
    seen: set[tuple[str, bool]] = set()
    for i, e in enumerate(events):
        if isinstance(e, NotificationBounced):
            key = (f"{e.message_id}:{e.recipient.lower()}", e.hard)
            if key not in seen:  # the first report of each severity is the one kept
                seen.add(key)
                bounce_idx.append(i)
    bounces = [bounce_update(events[i], now=at) for i in bounce_idx]  # type: ignore[arg-type]
    survivors = collapse_deliveries(updates)
    results = await deliveries.record_many([updates[i] for i in survivors], bounces)
    applied = [False] * len(events)
    for i, ok in zip([status_idx[k] for k in survivors] + bounce_idx, results, strict=True):
        applied[i] = ok
    hard = [undeliverable_doc(e) for e in events
            if isinstance(e, NotificationBounced) and e.hard]
    if undeliverable is not None and hard:
        await undeliverable.add_many(hard)
    if audit is not None and events:
        await audit.insert_many([audit_docs.notification(e) for e in events])
    for e, ok in zip(events, applied, strict=True):
        if ok:
            DELIVERIES.labels(e.tenant_id, e.kind.removeprefix("notification.")).inc()
    ignored = len(events) - sum(applied)
    if ignored:
        log.info("%d of %d delivery states ignored: a final or newer state is on file",
                 ignored, len(events))
    return applied


# --- audit.* -> audit_events -----------------------------------------------------------------


def audit_document(event: AuditEvent) -> Doc:
    if isinstance(event, AuditRecorded):
        return audit_docs.recorded(event)
    return audit_docs.content_access(event)


async def record_audit(*, event: AuditEvent, audit: AuditRepo) -> bool:
    """Content access (opened/downloaded) and every ``audit.recorded`` action, insert-once."""
    return await audit.insert(audit_document(event))


async def record_audits(*, events: Sequence[AuditEvent], audit: AuditRepo,
                        messages: MessageRepo | None = None) -> int:
    """A batch of them in one unordered insert (deterministic ids: a redelivered batch adds
    nothing); how many were new. Then the read marks: each ``message.opened`` sets ``opened``
    on the recipient's ``mailbox`` entry and keeps the earliest ``opened_at`` (an update by
    ``_id``, the same after a redelivery), so an inbox page reads its entries and nothing
    else. ``messages`` may be left out only by tests of the trail alone."""
    new = await audit.insert_many([audit_document(e) for e in events])
    if messages is not None:
        marks = [await _read_mark(e, messages) for e in events if isinstance(e, MessageOpened)]
        await messages.mark_opened([m for m in marks if m is not None])
    return new


async def _read_mark(event: MessageOpened,
                     messages: MessageRepo) -> tuple[str, datetime] | None:
    received = event.received_at
    if received is None:  # an event from before retrieve sent it: read it, by ``_id``
        doc = await messages.get(event.message_id)
        if doc is None or doc.get("tenant_id") != event.tenant_id or not doc.get("received_at"):
            return None
        received = doc["received_at"]
    key = mailbox_key(received, event.message_id)
    return MailboxDoc.prefix(event.tenant_id, "in", event.recipient) + key, event.occurred_at


# --- expiry and purge ------------------------------------------------------------------------


async def _delete_quietly(blobs: BlobStore, key: str) -> None:
    with contextlib.suppress(NotFound):
        await blobs.delete(key)


async def delete_objects(doc: Doc, blobs: BlobStore) -> None:
    """Every object of a message, and anything else left in its folder (a retried upload).
    Inline objects have nothing in S3: the purge's ``$unset`` of ``inline`` removes them."""
    inline = doc.get("inline") or {}
    for obj in doc.get("objects", []):
        if obj.get("object_id") not in inline:
            await _delete_quietly(blobs, obj["key"])
    await blobs.delete_prefix(message_prefix(doc["tenant_id"], doc["_id"]))


# What ``_purge_one`` did with a message.
PURGED_NOW, GONE, NOT_DUE, HELD = "purged", "gone", "not due", "held"


async def _purge_one(mid: str, at: datetime, due: Callable[[Doc], bool], *,
                     messages: MessageRepo, claims: PurgeClaims, blobs: BlobStore, owner: str,
                     lease_s: float) -> tuple[str, Doc | None]:
    """Purge one message if it is still stored (or half-purged) and ``due``.

    Claimed first (see ``PurgeClaims``) so replicas never purge the same one; a claim whose
    holder died is taken over after the lease. Objects go first, then the doc says
    ``purged`` -- a crash in between just repeats the deletes. Returns ``PURGED_NOW``,
    ``GONE`` (recalled, purged, unknown), ``NOT_DUE`` or ``HELD`` (another holder's lease),
    with the document as last read.
    """
    doc = await messages.get(mid)
    if doc is None or doc.get("state") not in ("stored", "purging"):
        return GONE, doc
    if not due(doc):
        return NOT_DUE, doc
    lease_until = at + timedelta(seconds=lease_s)
    if not await claims.claim(mid, owner=owner, now=at, lease_until=lease_until):
        return HELD, doc
    # Re-read under the claim: another replica may have purged it, or the expiry changed.
    doc = await messages.get(mid)
    if doc is None or doc.get("state") not in ("stored", "purging"):
        await claims.release(mid)
        return GONE, doc
    if not due(doc):
        await claims.release(mid)
        return NOT_DUE, doc
    await messages.mark_purging(mid, owner=owner, lease_until=lease_until)
    await delete_objects(doc, blobs)
    await messages.mark_purged(mid, now=at)
    await claims.release(mid)
    PURGED.inc()
    return PURGED_NOW, doc


async def purge_expired(*, messages: MessageRepo, claims: PurgeClaims, blobs: BlobStore,
                        owner: str, lease_s: float, limit: int, now: datetime | None = None,
                        grace_s: float = 120.0, max_minutes: int = 1440) -> int:
    """Purge up to ``limit`` expired messages; returns how many this caller purged.

    Reads no ``messages`` query: the ids due come from the expiry buckets (``expiry.py``),
    one exact ``_id`` read per minute from the cursor (the first minute not closed) to the
    current one, at most ``max_minutes`` of them per run (the catch-up after a long pause
    goes on in the next runs). Each id is checked on its own document, by ``_id``: purged
    if it is still stored or half-purged and its ``expires_at`` has come; taken out of the
    bucket when purged, gone, or moved to another minute; left in it when it is due later
    this minute or another replica holds its claim. A bucket is closed (deleted, the cursor
    moved past it) once it is empty and ``grace_s`` older than its minute: a replica files a
    past expiry under its current minute, so its clock and the time from its clock reading
    to the write must stay within ``grace_s``. A crash anywhere leaves the ids in their
    bucket, and the next run finds them purged (dropped) or finishes them under the claims.
    """
    at = now or _now()
    current = expiry.minute_of(at)
    closable = expiry.minute_of(at - timedelta(seconds=grace_s))  # minutes before it close
    first = minute = await messages.expiry_cursor(start=closable)
    last = min(current, minute + timedelta(minutes=max_minutes - 1))
    purged, contiguous = 0, True
    closed: list[datetime] = []
    next_minute = minute

    def due(doc: Doc) -> bool:
        exp = doc.get("expires_at")
        return doc.get("state") == "purging" or (exp is not None and expiry.aware(exp) <= at)

    while minute <= last and purged < limit:
        ids = await messages.expiry_bucket(minute)
        finished = True
        done: list[str] = []
        for mid in ids or []:
            if purged >= limit:
                finished = False
                break
            outcome, doc = await _purge_one(mid, at, due, messages=messages, claims=claims,
                                            blobs=blobs, owner=owner, lease_s=lease_s)
            if outcome == NOT_DUE:
                exp = None if doc is None else doc.get("expires_at")
                if exp is None or expiry.minute_of(exp) != minute:
                    outcome = GONE  # filed under another minute now (or never expires)
            if outcome == GONE and doc is not None and doc.get("state") == "purged":
                # A holder that died between ``purged`` and its release left its claim.
                await claims.release(mid)
            if outcome in (PURGED_NOW, GONE):
                if outcome == PURGED_NOW:
                    purged += 1
                done.append(mid)
                if len(done) >= 100:  # a restart re-checks at most this many
                    await messages.expiry_done(minute, done)
                    done = []
            else:
                finished = False
        await messages.expiry_done(minute, done)
        if contiguous and finished and minute < closable:
            if ids is not None:
                closed.append(minute)
            next_minute = minute + timedelta(minutes=1)
        else:
            contiguous = False
        minute += timedelta(minutes=1)
    if next_minute > first:
        await messages.expiry_close(closed, next_minute=next_minute)
    if purged:
        log.info("purged %d messages (expired)", purged)
    return purged


async def purge_retained(*, messages: MessageRepo, tenants: TenantPolicies, claims: PurgeClaims,
                         blobs: BlobStore, owner: str, lease_s: float, limit: int,
                         now: datetime | None = None) -> int:
    """Purge messages older than their tenant's ``policy.retention_days`` (by
    ``received_at``), whatever their expiry; the same claims and steps as the expiry purge."""
    purged = 0
    for tenant_id, days in await tenants.retention_days():
        if purged >= limit:
            break

        def older(at: datetime, n: int, tenant_id: str = tenant_id,
                  days: int = days) -> Awaitable[list[Doc]]:
            return messages.received_before(tenant_id, before=at - timedelta(days=days),
                                            limit=n)

        purged += await _purge_rounds(older, "past retention", messages=messages,
                                      claims=claims, blobs=blobs, owner=owner,
                                      lease_s=lease_s, limit=limit - purged, now=now)
    return purged


async def _purge_rounds(candidates: Callable[[datetime, int], Awaitable[list[Doc]]], why: str,
                        *, messages: MessageRepo, claims: PurgeClaims, blobs: BlobStore,
                        owner: str, lease_s: float, limit: int,
                        now: datetime | None = None) -> int:
    purged = 0
    while purged < limit:
        at = now or _now()
        progressed = False
        for cand in await candidates(at, min(100, limit - purged)):
            outcome, _ = await _purge_one(cand["_id"], at, lambda _doc: True,
                                          messages=messages, claims=claims, blobs=blobs,
                                          owner=owner, lease_s=lease_s)
            if outcome == PURGED_NOW:
                purged += 1
                progressed = True
                if purged >= limit:
                    break
        if not progressed:
            break
    if purged:
        log.info("purged %d messages (%s)", purged, why)
    return purged


# --- orphan sweep ----------------------------------------------------------------------------


async def sweep_orphans(*, messages: MessageRepo, blobs: BlobStore, grace_s: float,
                        now: datetime | None = None, chunk: int = 500) -> dict[str, int]:
    """Delete objects older than ``grace_s`` that no live message doc references.

    Those are uploads whose ``message.received`` never got recorded (ingest crashed, the
    sender gave up, an idempotent retry lost the race) and leftovers of purged messages.
    """
    cutoff = (now or _now()).timestamp() - grace_s
    counts = {"scanned": 0, "deleted": 0, "kept": 0, "young": 0, "unknown": 0}
    by_message: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, modified in await blobs.list_keys(OBJECT_ROOT):
        counts["scanned"] += 1
        m = OBJECT_KEY_RE.match(key)
        if m is None:
            counts["unknown"] += 1  # not our layout: leave it for a human
            continue
        if modified > cutoff:
            counts["young"] += 1
            continue
        by_message[m.group(2)].append((m.group(1), key))
    ids = list(by_message)
    for i in range(0, len(ids), chunk):
        batch = ids[i:i + chunk]
        referenced: dict[str, set[str]] = {}
        for doc in await messages.find_many(batch):
            # Purging or purged messages own nothing any more; a purging one is left to its
            # claimant (the purge deletes the folder itself).
            if doc.get("state") == "stored":
                referenced[doc["_id"]] = {o["key"] for o in doc.get("objects", [])}
            elif doc.get("state") == "purging":
                referenced[doc["_id"]] = {k for _, k in by_message[doc["_id"]]}
            else:
                referenced[doc["_id"]] = set()
        for message_id in batch:
            keep = referenced.get(message_id, set())
            for _tenant, key in by_message[message_id]:
                if key in keep:
                    counts["kept"] += 1
                    continue
                await _delete_quietly(blobs, key)
                counts["deleted"] += 1
                ORPHANS.inc()
    log.info("orphan sweep: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    return counts
