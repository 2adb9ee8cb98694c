"""NATS subjects, the stream and the durable consumers -- the shape of the event bus.

Subjects carry the tenant: ``secmsg.<tenant>.<event kind>``. One JetStream stream, ``SECMSG``,
holds them all (file storage, limits retention, a 2-hour duplicate window for ``Nats-Msg-Id``).
Each consuming service has durable pull consumers filtered to what it handles; replicas of one
service share the durable and JetStream spreads the work between them.
"""

from __future__ import annotations

import re

PREFIX = "secmsg"
STREAM = "SECMSG"
STREAM_SUBJECTS = [f"{PREFIX}.>"]
DUPLICATE_WINDOW_S = 2 * 3600
MAX_AGE_S = 14 * 24 * 3600

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

MESSAGE_RECEIVED = "message.received"
MESSAGE_STORED = "message.stored"
NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_DEFERRED = "notification.deferred"
NOTIFICATION_FAILED = "notification.failed"
NOTIFICATION_BOUNCED = "notification.bounced"
MESSAGE_RECALLED = "control.message.recalled"
MESSAGE_EXPIRY_CHANGED = "control.message.expiry_changed"
KEY_ROTATION_REQUESTED = "control.key.rotation_requested"
UNDELIVERABLE_CLEARED = "control.undeliverable.cleared"
MESSAGE_OPENED = "audit.message.opened"
ATTACHMENT_DOWNLOADED = "audit.attachment.downloaded"
AUDIT_RECORDED = "audit.recorded"
# Not consumed by any durable: every caching process listens with a core subscription.
TENANT_CHANGED = "tenant.changed"

# Not a tenant's subject (no tenant id starts with "_"): a worker other than store hands its
# dead letters to store here (``worker.DeadLetterRecorded``).
DEAD_LETTER_RECORDED_SUFFIX = "dead_letter.recorded"
DEAD_LETTER_RECORDED = f"{PREFIX}._ops.{DEAD_LETTER_RECORDED_SUFFIX}"

KIND_TO_SUFFIX = {
    "message.received": MESSAGE_RECEIVED,
    "message.stored": MESSAGE_STORED,
    "notification.sent": NOTIFICATION_SENT,
    "notification.deferred": NOTIFICATION_DEFERRED,
    "notification.failed": NOTIFICATION_FAILED,
    "notification.bounced": NOTIFICATION_BOUNCED,
    "message.recalled": MESSAGE_RECALLED,
    "message.expiry_changed": MESSAGE_EXPIRY_CHANGED,
    "key.rotation_requested": KEY_ROTATION_REQUESTED,
    "undeliverable.cleared": UNDELIVERABLE_CLEARED,
    "message.opened": MESSAGE_OPENED,
    "attachment.downloaded": ATTACHMENT_DOWNLOADED,
    "audit.recorded": AUDIT_RECORDED,
    "tenant.changed": TENANT_CHANGED,
}


def subject(tenant_id: str, suffix: str) -> str:
    if not TENANT_ID_RE.match(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} is not a valid subject token")
    return f"{PREFIX}.{tenant_id}.{suffix}"


def subject_for(event: object) -> str:
    return subject(event.tenant_id, KIND_TO_SUFFIX[event.kind])  # type: ignore[attr-defined]


def any_tenant(suffix: str) -> str:
    """Filter subject matching ``suffix`` for every tenant."""
    return f"{PREFIX}.*.{suffix}"


# Durable consumer names (one per service and role).
STORE_RECEIVED = "store-received"
STORE_DELIVERY = "store-delivery"
STORE_AUDIT = "store-audit"
NOTIFY_STORED = "notify-stored"
# secmsg.*.control.> (recall, expiry change, key rotation, undeliverable address cleared)
STORE_CONTROL = "store-control"
STORE_DEAD_LETTERS = "store-dead-letters"  # secmsg._ops.dead_letter.recorded
