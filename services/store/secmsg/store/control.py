"""``control.*`` events: recall and expiry change of one message; an address cleared from the
tenant's undeliverable list.

Every write to a stored message's document after its insert -- purge, recall, expiry change,
the key re-wrap -- runs under that message's purge claim (``PurgeClaims``, an insert with a
unique ``_id``, atomic on FerretDB too). FerretDB 1.x writes an update as "read the document,
change it, write it back by ``_id``", so two updates of different fields of one document at
once can lose one of them; holding the claim keeps them apart. A claim held by someone else
is a ``TransientError``: the event comes back with back-off.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from secmsg.shared.errors import PermanentError, TransientError
from secmsg.shared.events import MessageExpiryChanged, MessageRecalled, UndeliverableCleared
from secmsg.store import audit as audit_docs
from secmsg.store.ports import (
    AuditRepo,
    BlobStore,
    Doc,
    MessageRepo,
    PurgeClaims,
    UndeliverableRepo,
)
from secmsg.store.service import delete_objects

log = logging.getLogger(__name__)

LIVE = ("stored", "purging")


class ClaimHeld(TransientError):
    """Another replica purges, recalls or re-wraps this message right now."""


def recall_tombstone(event: MessageRecalled) -> Doc:
    """The record of a message recalled before its ``message.received`` was handled: a later
    (or redelivered) ``message.received`` finds it and never announces the message."""
    return {"_id": event.message_id, "tenant_id": event.tenant_id, "recipients": [],
            "recipient_addresses": [], "objects": [], "attachment_count": 0, "total_size": 0,
            "expires_at": None, "received_at": None, "stored_at": None, "state": "recalled",
            "purged_at": None, "recalled_at": event.occurred_at,
            "recalled_by": event.recalled_by, "notify": False}


async def _claimed(mid: str, *, claims: PurgeClaims, owner: str, lease_s: float,
                   now: datetime) -> None:
    if not await claims.claim(mid, owner=owner, now=now,
                              lease_until=now + timedelta(seconds=lease_s)):
        raise ClaimHeld("message is being changed by another worker")


async def recall_message(*, event: MessageRecalled, messages: MessageRepo, claims: PurgeClaims,
                         blobs: BlobStore, audit: AuditRepo, owner: str, lease_s: float,
                         now: datetime | None = None) -> str:
    """Purge a recalled message's objects and mark it ``recalled``; returns what happened.

    Idempotent: a redelivery finds ``recalled`` and only makes sure of the audit row. The
    objects go before the state changes, so a crash in between repeats the deletes. A message
    already purged by expiry is marked recalled too (the sender's slip shows the recall).
    """
    at = now or datetime.now(UTC)
    doc = await messages.get(event.message_id)
    if doc is None:
        # Recalled before store recorded it: leave a tombstone in its place (first insert
        # wins against the record itself) and empty its folder; the orphan sweep takes
        # anything uploaded later.
        if await messages.insert(recall_tombstone(event)):
            await delete_objects({"_id": event.message_id, "tenant_id": event.tenant_id},
                                 blobs)
            await audit.insert(audit_docs.recalled(event))
            log.info("message recalled before it was recorded")
            return "tombstone"
        doc = await messages.get(event.message_id)
        if doc is None:
            raise TransientError("message vanished right after a duplicate insert")
    if doc["tenant_id"] != event.tenant_id:
        raise PermanentError("recall of a message recorded for another tenant")
    if doc.get("state") == "recalled":
        await audit.insert(audit_docs.recalled(event))
        return "already"
    await _claimed(event.message_id, claims=claims, owner=owner, lease_s=lease_s, now=at)
    try:
        doc = await messages.get(event.message_id) or doc  # re-read under the claim
        if doc.get("state") in LIVE:
            await messages.mark_purging(event.message_id, owner=owner,
                                        lease_until=at + timedelta(seconds=lease_s))
        await delete_objects(doc, blobs)
        await messages.mark_recalled(event.message_id, at=event.occurred_at,
                                     by=event.recalled_by)
    finally:
        await claims.release(event.message_id)
    await audit.insert(audit_docs.recalled(event))
    log.info("message recalled", extra={"event": "message.recalled"})
    return "recalled"


async def change_expiry(*, event: MessageExpiryChanged, messages: MessageRepo,
                        claims: PurgeClaims, audit: AuditRepo, owner: str, lease_s: float,
                        attempt: int, missing_retries: int,
                        now: datetime | None = None) -> bool:
    """Set ``expires_at`` (None: never); True if applied. A time already past is left to the
    expiry loop, which purges the message on its next round.

    Changes apply in the order they were made (``occurred_at``), not the order they arrive.
    A message not on record yet is retried ``missing_retries`` times (its
    ``message.received`` may still be on the way), then dead-lettered.
    """
    at = now or datetime.now(UTC)
    doc = await messages.get(event.message_id)
    if doc is None:
        if attempt <= missing_retries:
            raise TransientError("message not recorded yet")
        raise PermanentError("expiry change for a message that is not on record")
    if doc["tenant_id"] != event.tenant_id:
        raise PermanentError("expiry change of a message recorded for another tenant")
    applied = False
    if doc.get("state") == "stored":
        await _claimed(event.message_id, claims=claims, owner=owner, lease_s=lease_s, now=at)
        try:
            applied = await messages.set_expiry(event.message_id, expires_at=event.expires_at,
                                                changed_at=event.occurred_at)
        finally:
            await claims.release(event.message_id)
    if not applied:
        log.info("expiry change not applied: message is %s or a later change is on file",
                 doc.get("state"))
    await audit.insert(audit_docs.expiry_changed(event))
    return applied


async def clear_undeliverable(*, event: UndeliverableCleared,
                              undeliverable: UndeliverableRepo) -> bool:
    """Take the address off the tenant's undeliverable list (ingest asked; ingest audits it).
    Idempotent: a redelivery finds nothing to remove. True when this call removed it."""
    removed = await undeliverable.remove(event.tenant_id, event.address)
    log.info("undeliverable address %s", "cleared" if removed else "was not on the list",
             extra={"event": event.kind})
    return removed
