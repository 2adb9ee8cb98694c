"""Admin routes for access: API keys, tenant users, user tokens, the tenant policy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from secmsg.ingest import admin_access
from secmsg.ingest.routes.common import (
    AUTH_ERRORS,
    Admin,
    DepsDep,
    body_schema,
    err,
    origin,
    partial_body,
)

router = APIRouter(prefix="/v1/admin", tags=["admin: access"])


class KeyIn(BaseModel):
    label: str = Field(min_length=1, max_length=100, examples=["outlook-addin"])
    scopes: list[Literal["send", "admin"]] = Field(min_length=1, examples=[["send"]])


class KeyOut(BaseModel):
    key_id: str
    label: str
    scopes: list[str]
    created_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the API key itself; shown only this once",
                     examples=["smk_0123456789abcdef_..."])


class KeyList(BaseModel):
    keys: list[KeyOut]


def _key(doc: dict[str, Any]) -> KeyOut:
    return KeyOut(key_id=str(doc.get("key_id")), label=str(doc.get("label", "")),
                  scopes=list(doc.get("scopes") or ["send"]), created_at=doc.get("created_at"),
                  revoked_at=doc.get("revoked_at"))


@router.post("/api-keys", response_model=KeyCreated, status_code=201,
             responses={**AUTH_ERRORS, 422: err("missing label or unknown scope")},
             summary="Create an API key (the key is shown once)")
async def create_api_key(body: KeyIn, creds: Admin, deps: DepsDep,
                         request: Request) -> KeyCreated:
    key, doc = await admin_access.create_key(creds=creds, label=body.label,
                                             scopes=list(body.scopes), repo=deps.access,
                                             events=deps.events, origin=origin(request))
    return KeyCreated(key=key, **_key(doc).model_dump())


@router.get("/api-keys", response_model=KeyList, responses=AUTH_ERRORS,
            summary="The tenant's API keys (never the secrets or their hashes)")
async def list_api_keys(creds: Admin, deps: DepsDep) -> KeyList:
    return KeyList(keys=[_key(d) for d in await deps.access.list_keys(creds.tenant.tenant_id)])


@router.delete("/api-keys/{key_id}", status_code=204,
               responses={**AUTH_ERRORS, 404: err("no such key of this tenant")},
               summary="Revoke an API key",
               description="Takes effect on the key's next request. A key may revoke itself "
                           "(e.g. when it leaked); repeating changes nothing.")
async def revoke_api_key(key_id: str, creds: Admin, deps: DepsDep, request: Request) -> None:
    await admin_access.revoke_key(creds=creds, key_id=key_id, repo=deps.access,
                                  events=deps.events, origin=origin(request),
                                  now=datetime.now(UTC))


class UserIn(BaseModel):
    role: Literal["sender", "admin"] = Field(
        description="sender: may send (webmail, toolbar) and see its slips; admin: also the "
                    "admin API through a token with the 'admin' scope")


class UserOut(BaseModel):
    email: str
    role: str
    created_at: datetime | None
    created_by: str | None


class UserList(BaseModel):
    users: list[UserOut]


def _user(doc: dict[str, Any]) -> UserOut:
    return UserOut(email=str(doc.get("email")), role=str(doc.get("role")),
                   created_at=doc.get("created_at"), created_by=doc.get("created_by"))


Email = Annotated[str, Path(max_length=320, examples=["alice@clinic.example"])]


@router.get("/users", response_model=UserList, responses=AUTH_ERRORS,
            summary="The tenant's users (senders and admins)")
async def list_users(creds: Admin, deps: DepsDep) -> UserList:
    return UserList(users=[_user(d) for d in await deps.access.users(creds.tenant.tenant_id)])


@router.put("/users/{email}", response_model=UserOut,
            responses={**AUTH_ERRORS, 400: err("not a valid email address"),
                       409: err("an admin demoting itself")},
            summary="Add a tenant user or change their role")
async def put_user(email: Email, body: UserIn, creds: Admin, deps: DepsDep,
                   request: Request) -> UserOut:
    return _user(await admin_access.put_user(
        creds=creds, email=email, role=body.role, repo=deps.access, events=deps.events,
        origin=origin(request), now=datetime.now(UTC)))


@router.delete("/users/{email}", status_code=204,
               responses={**AUTH_ERRORS, 404: err("no such tenant user"),
                          409: err("an admin removing itself")},
               summary="Remove a tenant user",
               description="They stay a recipient; their tokens lose the 'admin' scope and, "
                           "for sending, the rules of an external replier apply.")
async def delete_user(email: Email, creds: Admin, deps: DepsDep, request: Request) -> None:
    await admin_access.delete_user(creds=creds, email=email, repo=deps.access,
                                   events=deps.events, origin=origin(request))


class TokenOut(BaseModel):
    token_id: str
    email: str
    scopes: list[str]
    client: str | None
    label: str | None
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenOut]


@router.get("/tokens", response_model=TokenList, responses=AUTH_ERRORS,
            summary="User tokens of the tenant (toolbars, webmail), newest first (≤ 1000)")
async def list_tokens(creds: Admin, deps: DepsDep,
                      email: Annotated[str | None, Query(max_length=320)] = None) -> TokenList:
    docs = await deps.access.tokens(creds.tenant.tenant_id, email)
    return TokenList(tokens=[TokenOut(
        token_id=str(d.get("token_id")), email=str(d.get("email")),
        scopes=list(d.get("scopes") or []), client=d.get("client"), label=d.get("label"),
        created_at=d.get("created_at"), expires_at=d.get("expires_at"),
        last_used_at=d.get("last_used_at"), revoked_at=d.get("revoked_at")) for d in docs])


@router.delete("/tokens/{token_id}", status_code=204,
               responses={**AUTH_ERRORS, 404: err("no such token of this tenant")},
               summary="Revoke a user token (effective on its next request)")
async def revoke_token(token_id: str, creds: Admin, deps: DepsDep, request: Request) -> None:
    await admin_access.revoke_token(creds=creds, token_id=token_id, repo=deps.access,
                                    events=deps.events, origin=origin(request),
                                    now=datetime.now(UTC))


class LimitsOut(BaseModel):
    max_message_bytes: int
    max_recipients: int
    max_attachments: int
    max_envelope_bytes: int


class PolicyOut(BaseModel):
    signin: str
    allow_totp: bool
    allow_passkeys: bool
    session_idle_minutes: int
    session_absolute_hours: int
    retention_days: int | None
    default_expiry_days: int | None
    limits: LimitsOut
    platform_limits: LimitsOut = Field(description="the most a tenant admin may set")


@router.get("/policy", response_model=PolicyOut, responses=AUTH_ERRORS,
            summary="The tenant's sign-in, session, retention and limit policy")
async def get_policy(creds: Admin, deps: DepsDep) -> PolicyOut:
    return PolicyOut(**admin_access.policy_view(
        await deps.access.tenant(creds.tenant.tenant_id)))


_POLICY_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": body_schema(admin_access.PolicyIn),
    "example": {"signin": "password+code", "session_idle_minutes": 15,
                "limits": {"max_recipients": 20}}}}}}


@router.put("/policy", response_model=PolicyOut, openapi_extra=_POLICY_BODY,
            responses={**AUTH_ERRORS, 400: err(
                "a value out of range, a limit above the platform's, idle longer than the "
                "absolute session, or nothing to change")},
            summary="Change the policy (fields left out stay as they are)")
async def put_policy(creds: Admin, deps: DepsDep, request: Request) -> PolicyOut:
    body, raw = await partial_body(request, admin_access.PolicyIn)
    return PolicyOut(**await admin_access.put_policy(
        creds=creds, body=body, raw=raw, repo=deps.access, events=deps.events,
        origin=origin(request)))
