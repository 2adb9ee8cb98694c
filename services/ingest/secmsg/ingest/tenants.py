"""Tenant policy: the defaults written by the admin and the view the request path uses."""

from __future__ import annotations

from typing import Any

from secmsg.ingest.ports import Tenant

DEFAULT_LIMITS: dict[str, int] = {
    "max_message_bytes": 5_000_000_000,
    "max_recipients": 100,
    "max_attachments": 100,
    "max_envelope_bytes": 4_194_304,
}
DEFAULT_EXPIRY_DAYS = 30


def tenant_from_doc(doc: dict[str, Any]) -> Tenant:
    # Older or hand-written documents may lack a limit; the default applies then.
    limits = {**DEFAULT_LIMITS, **(doc.get("limits") or {})}
    return Tenant(
        tenant_id=doc["_id"],
        name=doc.get("display_name") or doc.get("name") or doc["_id"],
        max_message_bytes=int(limits["max_message_bytes"]),
        max_recipients=int(limits["max_recipients"]),
        max_attachments=int(limits["max_attachments"]),
        max_envelope_bytes=int(limits["max_envelope_bytes"]),
        default_expiry_days=doc.get("default_expiry_days", DEFAULT_EXPIRY_DAYS),
        key_generation=int(doc.get("key_generation") or 0),
    )
