"""Helpers for the retrieve tests: seeding like store, signing in, reading audit events."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats

from devstack.smtp_sink import Sink
from secmsg.retrieve.deps import Deps
from secmsg.shared import crypto, mongo, subjects
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.documents import MailboxDoc
from secmsg.shared.settings import CommonSettings

SEGMENT = 1024  # small segments so ranges cross boundaries with small objects
TENANT = "acme"
OTHER_TENANT = "globex"
BOB = "Bob@Example.org"
ALICE = "alice@example.org"


@dataclass
class Seeded:
    message_id: str
    tenant_id: str
    text: str | None
    html: str | None
    attachments: dict[str, bytes] = field(default_factory=dict)  # object_id -> plaintext
    doc: dict[str, Any] = field(default_factory=dict)

    def key(self, object_id: str) -> str:
        return f"t/{self.tenant_id}/m/{self.message_id}/{object_id}"


class Seeder:
    """Writes tenants, ``messages`` documents and encrypted objects like store does."""

    def __init__(self, settings: CommonSettings, db: Any, blobs: S3BlobStore):
        self.settings = settings
        self.db = db
        self.blobs = blobs

    async def tenant(self, tenant_id: str, display_name: str) -> None:
        await self.db[mongo.TENANTS].replace_one(
            {"_id": tenant_id},
            {"name": tenant_id, "display_name": display_name, "created_at": datetime.now(UTC),
             "default_expiry_days": 30, "footer": None, "disclaimers": []}, upsert=True)

    async def _object(self, tenant_id: str, message_id: str, role: str, data: bytes,
                      filename: str | None, content_type: str) -> dict[str, Any]:
        object_id = uuid.uuid4().hex
        key = f"t/{tenant_id}/m/{message_id}/{object_id}"
        data_key = crypto.new_data_key()
        await self.blobs.put_bytes(key, crypto.encrypt_all(data_key, object_id, data, SEGMENT))
        return {"object_id": object_id, "key": key, "role": role, "filename": filename,
                "content_type": content_type, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "wrapped_key": self.settings.key_ring.wrap(tenant_id, object_id, data_key),
                "segment_size": SEGMENT}

    async def message(self, *, tenant_id: str = TENANT, to: list[str] | None = None,
                      subject: str = "Lab results", text: str | None = "Hello Bob",
                      html: str | None = "<p>Hello <b>Bob</b></p>",
                      attachments: list[tuple[str, str, bytes]] | None = None,
                      expires_at: datetime | None = None, state: str = "stored",
                      received_at: datetime | None = None,
                      sender: str = "doctor@acme.example") -> Seeded:
        to = [BOB] if to is None else to
        message_id = uuid.uuid4().hex
        objects = []
        if text is not None:
            objects.append(await self._object(tenant_id, message_id, "text", text.encode(),
                                              None, "text/plain; charset=utf-8"))
        if html is not None:
            objects.append(await self._object(tenant_id, message_id, "html", html.encode(),
                                              None, "text/html; charset=utf-8"))
        seeded = Seeded(message_id, tenant_id, text, html)
        for filename, ctype, data in attachments or []:
            obj = await self._object(tenant_id, message_id, "attachment", data, filename, ctype)
            objects.append(obj)
            seeded.attachments[obj["object_id"]] = data
        now = datetime.now(UTC)
        doc = {
            "_id": message_id, "tenant_id": tenant_id, "sender": sender,
            "recipients": [{"address": a, "kind": "to"} for a in to],
            "recipient_addresses": [a.lower() for a in to], "subject": subject,
            "objects": objects, "attachment_count": len(seeded.attachments),
            "total_size": sum(o["size"] for o in objects), "disclaimer": None,
            "expires_at": expires_at if expires_at is not None else now + timedelta(days=30),
            "received_at": received_at or now, "stored_at": now, "state": state,
            "purged_at": now if state == "purged" else None,
        }
        await self.db[mongo.MESSAGES].insert_one(doc)
        if state == "stored":  # its listing entries, as store writes them with the message
            await self.db[mongo.MAILBOX].insert_many(MailboxDoc.entries(doc))
        seeded.doc = doc
        return seeded

    async def tamper(self, key: str, offset: int) -> None:
        blob = bytearray(await self.blobs.get_bytes(key))
        blob[offset] ^= 0x01
        await self.blobs.put_bytes(key, bytes(blob))


@dataclass
class Running:
    client: httpx.AsyncClient
    deps: Deps
    probes: httpx.AsyncClient  # the internal port's app: /healthz /readyz /metrics

    def shift_clock(self, seconds: float) -> None:
        """Move the app's notion of now (expiry tests without sleeping)."""
        base = self.deps.clock
        self.deps.clock = lambda: base() + timedelta(seconds=seconds)


CODE_RE = re.compile(r"\b(\d{8})\b")


def last_code(sink: Sink, address: str) -> str:
    mails = sink.handler.for_recipient(address)
    assert mails, f"no mail for {address}"
    body = mails[-1].message.get_body(("plain",))
    assert body is not None
    m = CODE_RE.search(body.get_content())
    assert m, "no code in the mail"
    return m.group(1)


async def sign_in(client: httpx.AsyncClient, sink: Sink, *, tenant_id: str = TENANT,
                  email: str = BOB) -> str:
    r = await client.post("/v1/auth/code", json={"tenant_id": tenant_id, "email": email})
    assert r.status_code == 202, r.text
    code = last_code(sink, email)
    r = await client.post("/v1/auth/session",
                          json={"tenant_id": tenant_id, "email": email, "code": code})
    assert r.status_code == 200, r.text
    client.cookies.clear()  # tests choose explicitly between bearer and cookie
    return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit_events(settings: CommonSettings) -> list[dict[str, Any]]:
    """Every audit event in the SECMSG stream, decoded."""
    import json

    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.STREAM)
        out: list[dict[str, Any]] = []
        if not info.state.messages:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(subjects.STREAM, seq)
            if msg.subject and ".audit." in msg.subject:
                out.append({"subject": msg.subject, **json.loads(msg.data or b"{}")})
        return out
    finally:
        await nc.close()
