"""Tenant administration of access: API keys, tenant users, user tokens, the tenant policy.

API keys: created with a label and scopes and shown once; a key may revoke itself (a leaked
key is then dead at once; the operator's CLI makes a new admin key if it was the last one).
Tenant users: an admin cannot remove or demote itself through its own token (the last admin
could otherwise lock the tenant out). Policy: tenant admins may lower the limits, never raise
them above the platform's (``DEFAULT_LIMITS``); the operator's CLI sets higher ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field

from secmsg.ingest import audit
from secmsg.ingest.envelope import MAX_EXPIRY_DAYS
from secmsg.ingest.ports import (
    SCOPE_ADMIN,
    SCOPE_SEND,
    AccessRepo,
    Credentials,
    EventSink,
    Origin,
)
from secmsg.ingest.tenants import DEFAULT_EXPIRY_DAYS, DEFAULT_LIMITS
from secmsg.shared.errors import Conflict, InvalidInput, NotFound
from secmsg.shared.headers import check_header_value

ROLES = ("sender", "admin")
DEFAULT_POLICY: dict[str, Any] = {"signin": "code", "allow_totp": True, "allow_passkeys": True,
                                  "session_idle_minutes": 30, "session_absolute_hours": 12,
                                  "retention_days": None}


def check_email(value: str, field: str = "email") -> str:
    check_header_value(field, value)
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"{field} is not a valid email address: {exc}") from None
    return value.strip()


# --- API keys ---------------------------------------------------------------------------------

async def create_key(*, creds: Credentials, label: str, scopes: list[str], repo: AccessRepo,
                     events: EventSink, origin: Origin) -> tuple[str, dict[str, Any]]:
    check_header_value("label", label)
    wanted = tuple(s for s in (SCOPE_SEND, SCOPE_ADMIN) if s in scopes)
    if not scopes or set(scopes) - {SCOPE_SEND, SCOPE_ADMIN}:
        raise InvalidInput("scopes must be a non-empty subset of send, admin")
    tenant_id = creds.tenant.tenant_id
    key = await repo.create_key(tenant_id, label=label, scopes=wanted)
    key_id = key.split("_", 2)[1]
    doc = next(k for k in await repo.list_keys(tenant_id) if k.get("key_id") == key_id)
    await audit.record(events=events, creds=creds, action="apikey.created", origin=origin,
                       detail={"key_id": key_id, "scopes": ",".join(wanted)})
    return key, doc


async def revoke_key(*, creds: Credentials, key_id: str, repo: AccessRepo, events: EventSink,
                     origin: Origin, now: datetime) -> None:
    before = await repo.revoke_key(creds.tenant.tenant_id, key_id, now=now)
    if before is None:
        raise NotFound("no such API key")
    if before.get("revoked_at") is None:
        await audit.record(events=events, creds=creds, action="apikey.revoked", origin=origin,
                           detail={"key_id": key_id})


# --- tenant users -----------------------------------------------------------------------------

def _own_account(creds: Credentials, email: str) -> bool:
    return creds.is_token and creds.email == email.lower()


async def put_user(*, creds: Credentials, email: str, role: str, repo: AccessRepo,
                   events: EventSink, origin: Origin, now: datetime) -> dict[str, Any]:
    email = check_email(email)
    if role not in ROLES:
        raise InvalidInput("role must be sender or admin")
    if _own_account(creds, email) and role != "admin":
        raise Conflict("an admin cannot demote itself; another admin can")
    doc = await repo.put_user(creds.tenant.tenant_id, email=email, role=role, by=creds.actor,
                              now=now)
    await audit.record(events=events, creds=creds, action="user.changed", origin=origin,
                       subject_address=email.lower(), detail={"role": role})
    return doc


async def delete_user(*, creds: Credentials, email: str, repo: AccessRepo, events: EventSink,
                      origin: Origin) -> None:
    if _own_account(creds, email):
        raise Conflict("an admin cannot remove itself; another admin can")
    if not await repo.delete_user(creds.tenant.tenant_id, email):
        raise NotFound("no such tenant user")
    await audit.record(events=events, creds=creds, action="user.changed", origin=origin,
                       subject_address=email.lower(), detail={"role": "none"})


# --- user tokens ------------------------------------------------------------------------------

async def revoke_token(*, creds: Credentials, token_id: str, repo: AccessRepo,
                       events: EventSink, origin: Origin, now: datetime) -> None:
    before = await repo.revoke_token(creds.tenant.tenant_id, token_id, now=now, by=creds.actor)
    if before is None:
        raise NotFound("no such token")
    if before.get("revoked_at") is None:
        await audit.record(events=events, creds=creds, action="token.revoked", origin=origin,
                           subject_address=before.get("email"), detail={"token_id": token_id})


# --- policy -----------------------------------------------------------------------------------

class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_message_bytes: int | None = Field(default=None, gt=0)
    max_recipients: int | None = Field(default=None, gt=0)
    max_attachments: int | None = Field(default=None, gt=0)
    max_envelope_bytes: int | None = Field(default=None, gt=0)


class PolicyIn(BaseModel):
    """Every field optional: what is left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    signin: Literal["code", "password", "password+code"] | None = Field(
        default=None, description="code: an emailed code only; password: a password, the code "
                                  "as fallback; password+code: both")
    allow_totp: bool | None = None
    allow_passkeys: bool | None = Field(
        default=None, description="passkeys (WebAuthn) as a sign-in method; a passkey "
                                  "satisfies every signin policy and needs no TOTP step")
    session_idle_minutes: int | None = Field(default=None, ge=5, le=24 * 60)
    session_absolute_hours: int | None = Field(default=None, ge=1, le=30 * 24)
    retention_days: int | None = Field(
        default=None, ge=0, le=MAX_EXPIRY_DAYS,
        description="days store keeps message records after expiry; null or 0: no limit")
    default_expiry_days: int | None = Field(
        default=None, ge=0, le=MAX_EXPIRY_DAYS,
        description="expiry of a message that sets none; 0: messages never expire")
    limits: Limits | None = None


def policy_view(tenant: dict[str, Any]) -> dict[str, Any]:
    policy = {**DEFAULT_POLICY, **(tenant.get("policy") or {})}
    return {**{k: policy[k] for k in DEFAULT_POLICY},
            "default_expiry_days": tenant.get("default_expiry_days", DEFAULT_EXPIRY_DAYS),
            "limits": {**DEFAULT_LIMITS, **(tenant.get("limits") or {})},
            "platform_limits": dict(DEFAULT_LIMITS)}


async def put_policy(*, creds: Credentials, body: PolicyIn, raw: dict[str, Any],
                     repo: AccessRepo, events: EventSink, origin: Origin) -> dict[str, Any]:
    """``raw``: the JSON as sent, to tell "left out" from an explicit null."""
    tenant_id = creds.tenant.tenant_id
    tenant = await repo.tenant(tenant_id)
    current = policy_view(tenant)
    fields: dict[str, Any] = {}
    changed: list[str] = []
    for name in DEFAULT_POLICY:
        if name in raw:
            value = getattr(body, name)
            if name == "retention_days":
                value = value or None
            elif value is None:
                raise InvalidInput(f"{name} cannot be null")
            fields[f"policy.{name}"] = value
            changed.append(name)
    if "default_expiry_days" in raw:
        days = body.default_expiry_days
        fields["default_expiry_days"] = days or None
    if body.limits is not None:
        for name, value in body.limits.model_dump(exclude_none=True).items():
            if value > DEFAULT_LIMITS[name]:
                raise InvalidInput(f"limits.{name} may be at most {DEFAULT_LIMITS[name]} (the "
                                   "platform's limit)")
            fields[f"limits.{name}"] = value
    idle = fields.get("policy.session_idle_minutes", current["session_idle_minutes"])
    absolute = fields.get("policy.session_absolute_hours", current["session_absolute_hours"])
    if idle > absolute * 60:
        raise InvalidInput("session_idle_minutes cannot exceed session_absolute_hours")
    if not fields:
        raise InvalidInput("nothing to change: give at least one policy field")
    if changed:
        # The whole document, so readers (retrieve, store) never need the defaults.
        whole = {k: current[k] for k in DEFAULT_POLICY}
        whole.update({name: fields.pop(f"policy.{name}") for name in changed})
        fields["policy"] = whole
    await repo.set_fields(tenant_id, fields)
    await audit.record(events=events, creds=creds, action="policy.changed", origin=origin,
                       detail={"fields": ",".join(sorted(
                           [*changed, *(f.split(".")[-1] for f in fields if f != "policy")]))})
    return policy_view(await repo.tenant(tenant_id))
