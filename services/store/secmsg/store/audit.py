"""Audit trail documents (``audit_events``): one builder per source, deterministic ``_id``s.

Append-only and insert-once by ``_id``: a redelivered event builds the same ``_id`` and the
insert collides, so nothing is recorded twice. The ``_id`` is ``<tenant>:<time>:<event id>``
(``AuditDoc.id_for``: the event's tenant and ``occurred_at``, so the admin export reads one
``_id`` range). Events that carry an ``event_id`` use it; the others (``message.received``,
``notification.*``, control events) derive one from what makes the action unique. Because the
time is part of the ``_id``, the same fact reported again by a *new* event with a later time
(a second DSN for one bounce) is a second row; a redelivery of one event never is.
``detail`` holds short fixed-vocabulary strings only, never content.
"""

from __future__ import annotations

from datetime import datetime

from secmsg.shared.documents import AuditDoc
from secmsg.shared.events import (
    AttachmentDownloaded,
    AuditRecorded,
    MessageExpiryChanged,
    MessageOpened,
    MessageRecalled,
    MessageReceived,
    NotificationBounced,
    NotificationSent,
)
from secmsg.store.ports import DeliveryEvent, Doc

SYSTEM = "system"


def _doc(*, id_: str, tenant_id: str, message_id: str, kind: str, actor: str,
         recipient: str | None = None, subject_address: str | None = None,
         detail: dict[str, str] | None = None, client_ip: str | None = None,
         user_agent: str | None = None, at: datetime) -> Doc:
    return {"_id": AuditDoc.id_for(tenant_id, at, id_), "event_id": id_,
            "tenant_id": tenant_id, "message_id": message_id, "kind": kind, "actor": actor,
            "recipient": recipient, "subject_address": subject_address,
            "detail": detail or {}, "client_ip": client_ip, "user_agent": user_agent, "at": at}


def accepted(event: MessageReceived) -> Doc:
    return _doc(id_=f"{event.message_id}:message.accepted", tenant_id=event.tenant_id,
                message_id=event.message_id, kind="message.accepted", actor=event.submitted_by,
                detail={"recipients": str(len(event.recipients)),
                        "objects": str(len(event.objects))},
                at=event.occurred_at)


def notification(event: DeliveryEvent) -> Doc:
    rcpt = event.recipient.lower()
    detail: dict[str, str]
    if isinstance(event, NotificationBounced):
        # One per recipient and DSN status: a repeated report of the same bounce is one fact.
        step = event.status
        detail = {"status": event.status, "hard": str(event.hard).lower(),
                  "reason": event.reason}
    else:
        step = str(event.attempt)
        detail = {"attempt": step}
        if isinstance(event, NotificationSent):
            detail["smtp_target"] = event.smtp_target
        else:
            detail["reason"] = event.reason
    return _doc(id_=f"{event.message_id}:{rcpt}:{event.kind}:{step}", tenant_id=event.tenant_id,
                message_id=event.message_id, kind=event.kind, actor=SYSTEM, recipient=rcpt,
                subject_address=rcpt, detail=detail, at=event.occurred_at)


def content_access(event: MessageOpened | AttachmentDownloaded) -> Doc:
    rcpt = event.recipient.lower()
    doc = _doc(id_=event.event_id, tenant_id=event.tenant_id, message_id=event.message_id,
               kind=event.kind, actor=rcpt, recipient=rcpt, subject_address=rcpt,
               client_ip=event.client_ip, user_agent=event.user_agent, at=event.occurred_at)
    if isinstance(event, AttachmentDownloaded):
        doc.update(object_id=event.object_id, range_start=event.range_start,
                   range_end=event.range_end)
    return doc


def recorded(event: AuditRecorded) -> Doc:
    subject = event.subject_address.lower() if event.subject_address else None
    return _doc(id_=event.event_id, tenant_id=event.tenant_id, message_id=event.message_id,
                kind=event.action, actor=event.actor, recipient=subject,
                subject_address=subject, detail=dict(event.detail),
                client_ip=event.client_ip, user_agent=event.user_agent, at=event.occurred_at)


def recalled(event: MessageRecalled) -> Doc:
    return _doc(id_=f"{event.message_id}:message.recalled", tenant_id=event.tenant_id,
                message_id=event.message_id, kind="message.recalled", actor=event.recalled_by,
                at=event.occurred_at)


def expiry_changed(event: MessageExpiryChanged) -> Doc:
    # Two changes of one message differ by when they were made.
    return _doc(id_=f"{event.message_id}:message.expiry_changed:"
                    f"{event.occurred_at.isoformat()}",
                tenant_id=event.tenant_id, message_id=event.message_id,
                kind="message.expiry_changed", actor=event.changed_by,
                detail={"expires_at": event.expires_at.isoformat() if event.expires_at
                        else "never"},
                at=event.occurred_at)


def key_rotated(*, tenant_id: str, rotation_id: str, generation: int, actor: str,
                messages: int, objects: int, at: datetime) -> Doc:
    return _doc(id_=f"key.rotated:{rotation_id}", tenant_id=tenant_id, message_id="",
                kind="key.rotated", actor=actor,
                detail={"rotation_id": rotation_id, "generation": str(generation),
                        "messages": str(messages), "objects": str(objects)},
                at=at)
