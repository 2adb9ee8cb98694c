"""Account and access actions as ``audit.recorded`` events (store writes the audit trail).

``detail`` carries fixed-vocabulary words only: never a code, password, token or content.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from secmsg.retrieve.ports import AuditPublisher
from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.events import AuditAction, AuditRecorded

log = logging.getLogger(__name__)


async def record(audit: AuditPublisher, *, tenant_id: str, action: AuditAction, actor: str,
                 now: datetime, subject_address: str | None = None,
                 detail: dict[str, str] | None = None, client_ip: str | None = None,
                 user_agent: str | None = None, required: bool = True) -> None:
    """Publish one audit event. ``required``: no audit, no action (503 to the caller);
    otherwise (e.g. a failed sign-in, which already failed) a lost event is only logged."""
    event = AuditRecorded(
        tenant_id=tenant_id, message_id="", event_id=uuid.uuid4().hex, action=action,
        actor=actor, subject_address=subject_address or actor, detail=detail or {},
        client_ip=client_ip, user_agent=user_agent[:512] if user_agent else None,
        occurred_at=now)
    try:
        await audit.publish(event)
    except DependencyUnavailable:
        if required:
            raise
        log.warning("audit event %s not recorded: event bus unavailable", action)
