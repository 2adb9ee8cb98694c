"""MongoDB: the ``dnsbl_status`` document (this process is its one writer) and a read of the
``messages`` collection (store's) to match bounce reports that lost their VERP tag."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from secmsg.notify.deliverability.ports import DnsblStatus, Listing
from secmsg.shared import mongo
from secmsg.shared.documents import MessageDoc, ReadView
from secmsg.shared.mongo import unavailable_as_503

STATUS_ID = mongo.DNSBL_STATUS_ID


class MongoStatusRepo:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._col = db[mongo.DNSBL_STATUS]

    async def load(self) -> DnsblStatus | None:
        async with unavailable_as_503():
            doc = await self._col.find_one({"_id": STATUS_ID})
        if doc is None:
            return None
        return DnsblStatus(
            listed=bool(doc.get("listed")),
            listings=tuple(Listing(target=str(x["target"]), zone=str(x["zone"]),
                                   answer=str(x.get("answer", "")))
                           for x in doc.get("listings") or ()),
            checked_at=doc["checked_at"],
            relay="standby" if doc.get("relay") == "standby" else "primary",
            switched_at=doc.get("switched_at"))

    async def save(self, status: DnsblStatus) -> None:
        # One writer (this singleton), so a plain replace is safe on FerretDB too.
        doc = {"_id": STATUS_ID, "listed": status.listed,
               "listings": [{"target": x.target, "zone": x.zone, "answer": x.answer}
                            for x in status.listings],
               "checked_at": status.checked_at, "relay": status.relay,
               "switched_at": status.switched_at}
        async with unavailable_as_503():
            await self._col.replace_one({"_id": STATUS_ID}, doc, upsert=True)


class MongoMessageDirectory:
    """Reads store's ``messages`` through the shared read-only view."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._messages = ReadView(db, MessageDoc)

    async def recipients_of(self, message_id: str) -> tuple[str, frozenset[str]] | None:
        doc = await self._messages.get(message_id, ["tenant_id", "recipient_addresses"])
        if doc is None or not doc.tenant_id:
            return None
        return doc.tenant_id, frozenset(a.lower() for a in doc.recipient_addresses)
