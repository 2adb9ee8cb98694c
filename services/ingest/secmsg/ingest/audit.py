"""Publishing ``audit.recorded`` for every state-changing sender or admin action.

The change is made first and the event published after it: if the bus is down the caller
gets a 503 and, every action being idempotent, simply repeats it (the repeat is audited too,
which an auditor can tell from the same action on the same subject twice). ``detail`` carries
fixed words only -- never content, codes, tokens, passwords or keys.

An action that changes the tenant's settings or API keys (``tenant_cache.CHANGE_ACTIONS``) is
followed by ``tenant.changed``, so every process drops what it cached of the tenant.
"""

from __future__ import annotations

import uuid
from typing import get_args

from secmsg.ingest.ports import Credentials, EventSink, Origin
from secmsg.shared.events import AuditAction, AuditRecorded, event_msg_id
from secmsg.shared.tenant_cache import CHANGE_ACTIONS, tenant_changed

ACTIONS = frozenset(get_args(AuditAction))


async def record(*, events: EventSink, creds: Credentials, action: str, origin: Origin,
                 message_id: str = "", subject_address: str | None = None,
                 detail: dict[str, str] | None = None) -> AuditRecorded:
    if action not in ACTIONS:
        raise ValueError(f"not an audit action: {action}")
    event = AuditRecorded(
        tenant_id=creds.tenant.tenant_id, message_id=message_id, event_id=uuid.uuid4().hex,
        action=action, actor=creds.actor, subject_address=subject_address,
        detail=dict(detail or {}), client_ip=origin.client_ip, user_agent=origin.user_agent)
    await events.publish(event, event_msg_id(event, event.event_id))
    aspect = CHANGE_ACTIONS.get(action)
    if aspect is not None:
        # Every process caching the tenant's keys or settings drops them (this one already
        # did when it wrote the change).
        change = tenant_changed(event.tenant_id, aspect)
        await events.publish(change, event_msg_id(change, change.change_id))
    return event
