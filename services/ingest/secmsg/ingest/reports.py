"""Admin reports and the few changes next to them: the audit export, delivery figures,
deliverability, undeliverable addresses, and per-tenant key rotation.

Ingest writes none of what these report on (store owns ``audit_events``,
``delivery_status``, ``undeliverable`` and ``key_rotations``; notify ``dnsbl_status``): it
reads them through ``secmsg.shared.documents`` and asks their owner for a change by an event.

Key rotation: ingest records the request in its own ``tenants`` document (``key_generation``,
and ``key_rotation``: id, generation, who, when) and publishes ``key.rotation_requested``;
store creates and updates the progress record. The rotation id is derived from the tenant and
the new generation, so two concurrent requests name the same rotation, publish the same
``Nats-Msg-Id`` (the server keeps one) and both answer with it. A request whose event was not
published is completed by the next call (which then answers 409, that rotation being active).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from secmsg.ingest import audit
from secmsg.ingest.ports import AccessRepo, Credentials, EventSink, Origin, Reports
from secmsg.shared.documents import KeyRotationDoc
from secmsg.shared.errors import Conflict, InvalidInput, NotFound
from secmsg.shared.events import KeyRotationRequested, UndeliverableCleared, event_msg_id
from secmsg.shared.ids import new_id

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
    async for audit_doc in reports.audit(tenant_id, since=since, until=until,
                                         message_id=message_id):
        doc = audit_doc.model_dump(by_alias=True)
        row = {("event_id" if k == "_id" else k): doc[k] for k in AUDIT_FIELDS if k in doc}
        # The event's own id; the ``_id`` (tenant and time first) only where none was kept.
        row["event_id"] = doc.get("event_id") or doc["_id"]
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
    """Ask store (the list's owner) to take the address off; notify sends to it again once
    store has (normally within a second)."""
    tenant_id = creds.tenant.tenant_id
    if not await reports.is_undeliverable(tenant_id, address):
        raise NotFound("the address is not on the undeliverable list")
    event = UndeliverableCleared(tenant_id=tenant_id, message_id="", event_id=new_id(),
                                 address=address.lower(), cleared_by=creds.actor)
    await events.publish(event, event_msg_id(event, event.address, event.event_id))
    await audit.record(events=events, creds=creds, action="undeliverable.cleared",
                       origin=origin, subject_address=address.lower())


def rotation_id_for(tenant_id: str, generation: int) -> str:
    return hashlib.sha256(f"{tenant_id}:key-generation:{generation}".encode()).hexdigest()[:32]


def requested_rotation(tenant: dict[str, Any], rotation_id: str | None = None
                       ) -> KeyRotationDoc | None:
    """The tenant's last rotation request as ``requested`` (what it is until store takes it
    up); only the one named ``rotation_id`` when given."""
    req = tenant.get("key_rotation")
    if not isinstance(req, dict) or not isinstance(req.get("rotation_id"), str):
        return None
    if rotation_id is not None and req["rotation_id"] != rotation_id:
        return None
    return _requested(str(tenant["_id"]), req)


def _requested(tenant_id: str, req: dict[str, Any]) -> KeyRotationDoc:
    return KeyRotationDoc.model_validate({
        "_id": req["rotation_id"], "tenant_id": tenant_id,
        "generation": int(req.get("generation") or 0), "state": "requested",
        "done": 0, "requested_by": req.get("requested_by"),
        "started_at": req.get("requested_at"), "updated_at": req.get("requested_at")})


async def rotation(*, tenant_id: str, rotation_id: str, reports: Reports,
                   access: AccessRepo) -> KeyRotationDoc:
    """Store's progress record, or the request itself until store has taken it up."""
    found = await reports.rotation(tenant_id, rotation_id)
    if found is None:
        found = requested_rotation(await access.tenant(tenant_id), rotation_id)
    if found is None:
        raise NotFound("no such rotation")
    return found


async def _start(*, rotation: KeyRotationDoc, events: EventSink) -> None:
    event = KeyRotationRequested(tenant_id=rotation.tenant_id, message_id=rotation.id,
                                 rotation_id=rotation.id, generation=rotation.generation,
                                 requested_by=rotation.requested_by or "")
    await events.publish(event, event_msg_id(event))


async def rotate_key(*, creds: Credentials, reports: Reports, access: AccessRepo,
                     events: EventSink, origin: Origin, now: datetime) -> tuple[str, int]:
    tenant_id = creds.tenant.tenant_id
    tenant = await access.tenant(tenant_id)
    current = int(tenant.get("key_generation") or 0)
    last = requested_rotation(tenant)
    if last is not None:
        progress = await reports.rotation(tenant_id, last.id)
        if progress is None or progress.state in ("requested", "running"):
            # Still active; its event may have been lost with a crashed request: send it again
            # (the same Nats-Msg-Id, so a copy that did arrive is dropped).
            await _start(rotation=last, events=events)
            state = progress.state if progress is not None else last.state
            raise Conflict(f"rotation {last.id} to generation {last.generation} is still "
                           f"{state}; wait for it to finish")
    generation = current + 1
    rotation_id = rotation_id_for(tenant_id, generation)
    req = {"rotation_id": rotation_id, "generation": generation, "requested_by": creds.actor,
           "requested_at": now}
    await access.set_fields(tenant_id, {"key_generation": generation, "key_rotation": req})
    await _start(rotation=_requested(tenant_id, req), events=events)
    await audit.record(events=events, creds=creds, action="key.rotated", origin=origin,
                       detail={"generation": str(generation), "rotation_id": rotation_id})
    return rotation_id, generation
