"""The few reads only the webmail needs, on documents other services write (read-only).

Access decisions stay in ``secmsg.retrieve.service``: these reads only decorate pages (read
state, branding, the sender's own sent list) or explain why a message the user was sent is
gone. None of them returns message content.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from secmsg.shared import mongo

Doc = dict[str, Any]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


_SENT_FIELDS = {"subject": 1, "recipients": 1, "received_at": 1, "expires_at": 1,
                "total_size": 1, "state": 1}


def _sent_by(tenant_id: str, address: str) -> Doc:
    return {"tenant_id": tenant_id,
            "sender": {"$regex": "^" + re.escape(address) + "$", "$options": "i"}}


class WebQueries:
    def __init__(self, db: Any):
        self._db = db

    async def tenant(self, tenant_id: str) -> Doc | None:
        async with mongo.unavailable_as_503():
            doc: Doc | None = await self._db[mongo.TENANTS].find_one(
                {"_id": tenant_id}, {"name": 1, "display_name": 1, "branding": 1, "footer": 1,
                                     "disclaimers": 1, "policy": 1})
        return doc

    async def recipients(self, tenant_id: str, message_id: str) -> list[str]:
        """The addresses a message was sent to: only to match the link's recipient hint."""
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.MESSAGES].find_one(
                {"_id": message_id, "tenant_id": tenant_id}, {"recipients.address": 1})
        return [str(r.get("address", "")) for r in (doc or {}).get("recipients") or []
                if isinstance(r, dict)]

    async def role(self, tenant_id: str, address: str) -> str | None:
        """``sender`` / ``admin`` for tenant users, None for everyone else."""
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.TENANT_USERS].find_one(
                {"_id": f"{tenant_id}:{address.lower()}"}, {"role": 1})
        return str(doc.get("role")) if doc else None

    async def opened(self, tenant_id: str, address: str, message_ids: list[str]) -> set[str]:
        """Which of these messages this address has opened before (store's audit trail)."""
        if not message_ids:
            return set()
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.AUDIT].find(
                {"tenant_id": tenant_id, "message_id": {"$in": message_ids},
                 "kind": "message.opened", "recipient": address.lower()}, {"message_id": 1})
            return {d["message_id"] async for d in cursor}

    async def sent(self, tenant_id: str, address: str, limit: int) -> list[Doc]:
        """Messages this address sent through the tenant, newest first (metadata only)."""
        async with mongo.unavailable_as_503():
            cursor = self._db[mongo.MESSAGES].find(
                _sent_by(tenant_id, address), _SENT_FIELDS).sort("received_at", -1).limit(limit)
            return [d async for d in cursor]

    async def sent_one(self, tenant_id: str, address: str, message_id: str) -> Doc | None:
        """One message this address sent (None for anyone else's), read directly."""
        async with mongo.unavailable_as_503():
            doc: Doc | None = await self._db[mongo.MESSAGES].find_one(
                {"_id": message_id, **_sent_by(tenant_id, address)}, _SENT_FIELDS)
        return doc

    async def why_gone(self, tenant_id: str, address: str, message_id: str,
                       now: datetime) -> str | None:
        """``expired`` / ``revoked`` / ``recalled`` for a message addressed to ``address``
        that it can no longer open; None when it was never theirs (the page stays 404)."""
        async with mongo.unavailable_as_503():
            doc = await self._db[mongo.MESSAGES].find_one(
                {"_id": message_id, "tenant_id": tenant_id,
                 "recipient_addresses": address.lower()},
                {"state": 1, "expires_at": 1})
            if doc is None:
                return None
            rev = await self._db[mongo.REVOCATIONS].find_one(
                {"_id": {"$in": [f"{message_id}:{address.lower()}", f"{message_id}:*"]}},
                {"kind": 1})
        if doc.get("state") == "recalled" or (rev and rev.get("kind") == "recalled"):
            return "recalled"
        if rev:
            return "revoked"
        expires = _aware(doc.get("expires_at"))
        if doc.get("state") in ("purging", "purged") or (expires is not None and expires <= now):
            return "expired"
        return None
