"""Admin reports and the few changes next to them: the audit export, delivery figures,
deliverability, undeliverable addresses, and per-tenant key rotation.

Key rotation is exactly-once by an insert: the request's ``_id`` is derived from the tenant
and the new generation, so two concurrent requests cannot both start one. The generation is
bumped and the event published after the insert; a request that died in between is completed
by the next call (which then answers 409, since that rotation is now running).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from secmsg.ingest import audit
from secmsg.ingest.ports import AccessRepo, Credentials, EventSink, Origin, Reports
from secmsg.shared.errors import Conflict, InvalidInput, NotFound
from secmsg.shared.events import KeyRotationRequested, event_msg_id

# Export fields, in this order; anything else store may add stays out of the export.
AUDIT_FIELDS = ("_id", "at", "tenant_id", "message_id", "kind", "actor", "recipient",
                "subject_address", "object_id", "range_start", "range_end", "detail",
                "client_ip", "user_agent")


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be before until")


async def audit_lines(*, tenant_id: str, since: datetime | None, until: datetime | None,
                      message_id: str | None, reports: Reports) -> AsyncIterator[bytes]:
    """One JSON object per line, read from a cursor: constant memory whatever the size."""
    async for doc in reports.audit(tenant_id, since=since, until=until, message_id=message_id):
        row = {("event_id" if k == "_id" else k): doc[k] for k in AUDIT_FIELDS if k in doc}
        yield (json.dumps(row, default=_json, separators=(",", ":")) + "\n").encode()


def _json(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def delivery_stats(*, tenant_id: str, since: datetime | None, until: datetime | None,
                         reports: Reports) -> dict[str, Any]:
    """``sent`` counts notifications accepted and not bounced later (store turns a bounced
    one's state into ``bounced``), so the rate -- accepted minus bounced over every final
    state -- is ``sent / (sent + bounced + failed)``."""
    counts = await reports.delivery_counts(tenant_id, since=since, until=until)
    final = counts["sent"] + counts["bounced"] + counts["failed"]
    return {**counts, "final": final,
            "delivery_rate": round(counts["sent"] / final, 4) if final else None}


async def clear_undeliverable(*, creds: Credentials, address: str, reports: Reports,
                              events: EventSink, origin: Origin) -> None:
    if not await reports.clear_undeliverable(creds.tenant.tenant_id, address):
        raise NotFound("the address is not on the undeliverable list")
    await audit.record(events=events, creds=creds, action="undeliverable.cleared",
                       origin=origin, subject_address=address.lower())


def rotation_id_for(tenant_id: str, generation: int) -> str:
    return hashlib.sha256(f"{tenant_id}:key-generation:{generation}".encode()).hexdigest()[:32]


async def _start(*, rotation: dict[str, Any], current: int, access: AccessRepo,
                 events: EventSink) -> None:
    generation = int(rotation["generation"])
    if generation > current:
        await access.set_fields(rotation["tenant_id"], {"key_generation": generation})
    event = KeyRotationRequested(tenant_id=rotation["tenant_id"], message_id=rotation["_id"],
                                 rotation_id=rotation["_id"], generation=generation,
                                 requested_by=str(rotation.get("requested_by", "")))
    await events.publish(event, event_msg_id(event))


async def rotate_key(*, creds: Credentials, reports: Reports, access: AccessRepo,
                     events: EventSink, origin: Origin, now: datetime) -> tuple[str, int]:
    tenant_id = creds.tenant.tenant_id
    current = int((await access.tenant(tenant_id)).get("key_generation") or 0)
    active = await reports.active_rotation(tenant_id)
    if active is not None:
        await _start(rotation=active, current=current, access=access, events=events)
        raise Conflict(f"rotation {active['_id']} to generation {active['generation']} is "
                       f"still {active.get('state')}; wait for it to finish")
    generation = current + 1
    rotation = {"_id": rotation_id_for(tenant_id, generation), "tenant_id": tenant_id,
                "generation": generation, "state": "requested", "total": None, "done": 0,
                "started_at": now, "updated_at": now, "finished_at": None,
                "requested_by": creds.actor}
    if not await reports.insert_rotation(rotation):
        raise Conflict("another rotation to this generation was requested at the same time")
    await _start(rotation=rotation, current=current, access=access, events=events)
    await audit.record(events=events, creds=creds, action="key.rotated", origin=origin,
                       detail={"generation": str(generation), "rotation_id": rotation["_id"]})
    return rotation["_id"], generation
