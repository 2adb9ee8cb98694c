"""Helpers for the access and admin tests: documents other services write (tokens by
retrieve, messages and audit by store) inserted directly, and the events ingest published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter

from secmsg.shared import mongo, subjects
from secmsg.shared.events import AnyEvent
from secmsg.shared.ids import UserToken, token_hash
from secmsg.shared.settings import CommonSettings

_ANY: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def make_token(db: Any, *, tenant: str, email: str, scopes: list[str],
                     created_at: datetime | None = None, expires_at: datetime | None = None,
                     client: str = "toolbar") -> tuple[str, str]:
    """A token as retrieve issues it (the shared format); returns (token, token_id)."""
    minted = UserToken.new()
    token_id, token = minted.token_id, str(minted)
    await db[mongo.TOKENS].insert_one({
        "_id": token_hash(token), "token_id": token_id,
        "tenant_id": tenant, "email": email.lower(), "scopes": scopes, "client": client,
        "label": "test", "created_at": created_at or datetime.now(UTC),
        "expires_at": expires_at, "last_used_at": None, "revoked_at": None})
    return token, token_id


async def add_user(db: Any, *, tenant: str, email: str, role: str) -> None:
    await db[mongo.TENANT_USERS].insert_one({
        "_id": f"{tenant}:{email.lower()}", "tenant_id": tenant, "email": email, "role": role,
        "created_at": datetime.now(UTC), "created_by": "test"})


async def add_message(db: Any, *, tenant: str, sender: str, to: list[str],
                      submitted_by: str = "api_key:x", bcc: list[str] = ()) -> str:
    """A ``messages`` record as store writes it."""
    message_id = uuid.uuid4().hex
    recipients = [{"address": a, "kind": "to"} for a in to]
    recipients += [{"address": a, "kind": "bcc"} for a in bcc]
    now = datetime.now(UTC)
    await db[mongo.MESSAGES].insert_one({
        "_id": message_id, "tenant_id": tenant, "sender": sender, "recipients": recipients,
        "recipient_addresses": [r["address"].lower() for r in recipients], "subject": "s",
        "objects": [], "attachment_count": 0, "total_size": 0, "disclaimer": None,
        "expires_at": now + timedelta(days=30), "received_at": now, "stored_at": now,
        "submitted_by": submitted_by, "notify": True, "state": "stored", "purged_at": None})
    return message_id


async def published(settings: CommonSettings) -> list[Any]:
    """Every event in the stream, decoded."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(subjects.STREAM)
        except NotFoundError:
            return []
        out = []
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(subjects.STREAM, seq)
                out.append(_ANY.validate_json(msg.data))
        return out
    finally:
        await nc.close()


async def audits(settings: CommonSettings, action: str | None = None) -> list[Any]:
    return [e for e in await published(settings)
            if e.kind == "audit.recorded" and (action is None or e.action == action)]
