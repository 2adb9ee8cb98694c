"""The few reads only the webmail needs, on documents other services write (read-only).

Access decisions stay in ``secmsg.retrieve.service``: these reads only decorate pages
(branding, the sender's own sent list) or explain why a message the user was sent is gone.
None of them returns message content. (Read marks come with the inbox's ``mailbox`` entries.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from secmsg.shared.documents import (
    MailboxDoc,
    MessageDoc,
    ReadView,
    RevocationDoc,
    TenantDoc,
    TenantUserDoc,
)

Doc = dict[str, Any]


_SENT_FIELDS = ("subject", "recipients", "received_at", "expires_at", "total_size", "state")


class WebQueries:
    def __init__(self, db: Any):
        self._tenants = ReadView(db, TenantDoc)
        self._messages = ReadView(db, MessageDoc)
        self._mailbox = ReadView(db, MailboxDoc)
        self._users = ReadView(db, TenantUserDoc)
        self._revocations = ReadView(db, RevocationDoc)

    async def tenant(self, tenant_id: str) -> Doc | None:
        doc = await self._tenants.get(tenant_id, ["name", "display_name", "branding", "footer",
                                                  "disclaimers", "policy"])
        return None if doc is None else doc.model_dump(by_alias=True)

    async def recipients(self, tenant_id: str, message_id: str) -> list[str]:
        """The addresses a message was sent to: only to match the link's recipient hint."""
        doc = await self._messages.find_one({"_id": message_id, "tenant_id": tenant_id},
                                            ["recipients"])
        return [r.address for r in doc.recipients] if doc else []

    async def role(self, tenant_id: str, address: str) -> str | None:
        """``sender`` / ``admin`` for tenant users, None for everyone else."""
        doc = await self._users.get(TenantUserDoc.id_for(tenant_id, address), ["role"])
        return doc.role if doc else None

    async def sent(self, tenant_id: str, address: str, limit: int,
                   after: str | None = None) -> list[Doc]:
        """Messages this address sent through the tenant, newest first (metadata only): one
        ``_id`` range of its ``sent`` box in ``mailbox``, cut below ``after`` (a key)."""
        docs = await self._mailbox.find(
            {"_id": MailboxDoc.key_range(tenant_id, "sent", address, after)},
            sort=[("_id", -1)], limit=limit)
        return [{"_id": d.message_id, "key": d.key, "subject": d.subject,
                 "recipients": d.recipients, "received_at": d.received_at,
                 "expires_at": d.expires_at, "total_size": d.total_size}
                for d in docs if d.address == address.lower()]

    async def sent_one(self, tenant_id: str, address: str, message_id: str) -> Doc | None:
        """One message this address sent (None for anyone else's), read by ``_id`` alone."""
        doc = await self._messages.get(message_id, ("tenant_id", "sender", *_SENT_FIELDS))
        if doc is None or doc.tenant_id != tenant_id or \
                doc.sender.lower() != address.lower():
            return None
        return _page_fields(doc)

    async def why_gone(self, tenant_id: str, address: str, message_id: str,
                       now: datetime) -> str | None:
        """``expired`` / ``revoked`` / ``recalled`` for a message addressed to ``address``
        that it can no longer open; None when it was never theirs (the page stays 404)."""
        doc = await self._messages.find_one(
            {"_id": message_id, "tenant_id": tenant_id, "recipient_addresses": address.lower()},
            ["state", "expires_at"])
        if doc is None:
            return None
        rev = await self._revocations.find_one(
            {"_id": {"$in": [RevocationDoc.id_for(message_id, address),
                             RevocationDoc.id_for(message_id, None)]}}, ["kind"])
        if doc.state == "recalled" or (rev and rev.kind == "recalled"):
            return "recalled"
        if rev:
            return "revoked"
        if doc.state in ("purging", "purged") or (doc.expires_at is not None
                                                   and doc.expires_at <= now):
            return "expired"
        return None


def _page_fields(doc: MessageDoc) -> Doc:
    """What the sent pages show, as the mapping the templates take."""
    return {"_id": doc.id, **doc.model_dump(include=set(_SENT_FIELDS))}
