"""Personal access tokens (``smt_<token_id>_<secret>``): issue, verify, list, revoke.

Toolbars get them through the device flow (``device.py``); the webmail mints a short-lived
``send`` token to hand to ingest. Only ``sha256(token)`` is stored (``tokens`` in
docs/design.md), so a database copy yields no usable token. A token is dead when revoked,
expired, or issued before the account's ``sessions_valid_after`` (sign out everywhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from secmsg.retrieve import audit as audit_log
from secmsg.retrieve.ports import (
    AccountRepo,
    AuditPublisher,
    SessionRecord,
    TokenRecord,
    TokenRepo,
)
from secmsg.shared.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from secmsg.shared.ids import (
    TOKEN_PREFIX,
    UserToken,
    is_message_id,
    looks_like_user_token,
    token_hash,
)

PREFIX = TOKEN_PREFIX
SCOPES = frozenset({"read", "send", "admin"})
WEBMAIL_SEND_TTL = timedelta(minutes=5)
# last_used_at is informational: written at most this often, not on every request.
_TOUCH_EVERY = timedelta(seconds=60)
_DEAD = "the token is unknown, revoked or expired"


def looks_like_token(credential: str) -> bool:
    return looks_like_user_token(credential)


def hash_token(token: str) -> str:
    """What is stored for any bearer secret (session, access token, device code)."""
    return token_hash(token)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(scopes))
    if not wanted or any(s not in SCOPES for s in wanted):
        raise InvalidInput(f"scopes must be a non-empty subset of {sorted(SCOPES)}")
    return wanted


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once, never stored
    token_id: str
    scopes: tuple[str, ...]
    expires_at: datetime | None


async def issue_token(*, tokens: TokenRepo, accounts: AccountRepo, audit: AuditPublisher,
                      tenant_id: str, email: str, scopes: Iterable[str], client: str,
                      now: datetime, label: str = "", ttl: timedelta | None = None,
                      client_ip: str | None = None,
                      user_agent: str | None = None) -> IssuedToken:
    """Mint a token for ``email`` (already authenticated by the caller). ``admin`` only for a
    tenant admin. Audited (``token.issued``) before the token is handed out."""
    wanted = check_scopes(scopes)
    if "admin" in wanted and await accounts.tenant_role(tenant_id=tenant_id,
                                                        email=email) != "admin":
        raise Forbidden("only tenant admins may hold a token with scope admin")
    minted = UserToken.new()
    token_id, token = minted.token_id, str(minted)
    expires_at = now + ttl if ttl is not None else None
    await audit_log.record(audit, tenant_id=tenant_id, action="token.issued", actor=email,
                           now=now, detail={"token_id": token_id, "client": client[:64],
                                            "scopes": " ".join(wanted)},
                           client_ip=client_ip, user_agent=user_agent)
    await tokens.insert(TokenRecord(
        token_hash=hash_token(token), token_id=token_id, tenant_id=tenant_id, email=email,
        scopes=wanted, client=client[:64], label=label[:200], created_at=now,
        expires_at=expires_at, last_used_at=None, revoked_at=None))
    return IssuedToken(token, token_id, wanted, expires_at)


async def issue_webmail_send_token(*, tokens: TokenRepo, accounts: AccountRepo,
                                   audit: AuditPublisher, session: SessionRecord,
                                   now: datetime, client_ip: str | None = None,
                                   user_agent: str | None = None) -> IssuedToken:
    """The short-lived ``send`` token the webmail presents to ingest to send a reply."""
    if session.via != "session":
        raise Forbidden("only a signed-in browser session may mint a webmail token")
    return await issue_token(tokens=tokens, accounts=accounts, audit=audit,
                             tenant_id=session.tenant_id, email=session.address,
                             scopes=["send"], client="webmail", label="webmail reply",
                             ttl=WEBMAIL_SEND_TTL, now=now, client_ip=client_ip,
                             user_agent=user_agent)


def _alive(record: TokenRecord, valid_after: datetime | None, now: datetime) -> bool:
    if record.revoked_at is not None:
        return False
    if record.expires_at is not None and record.expires_at <= now:
        return False
    return valid_after is None or record.created_at >= valid_after


async def verify_token(*, token: str, tokens: TokenRepo, accounts: AccountRepo,
                       now: datetime, scope: str = "read") -> SessionRecord:
    """The caller behind a bearer token, shaped like a session; ``Unauthorized`` if dead,
    ``Forbidden`` if alive without ``scope``."""
    parsed = UserToken.parse(token)
    if parsed is None:
        raise Unauthorized(_DEAD)
    record = await tokens.get(hash_token(token))
    if record is None or record.token_id != parsed.token_id:
        raise Unauthorized(_DEAD)
    account = await accounts.get(tenant_id=record.tenant_id, email=record.email)
    if not _alive(record, account.sessions_valid_after if account else None, now):
        raise Unauthorized(_DEAD)
    if scope not in record.scopes:
        raise Forbidden(f"this token does not have the scope {scope}")
    if record.last_used_at is None or now - record.last_used_at >= _TOUCH_EVERY:
        await tokens.touch(record.token_hash, now)
    return SessionRecord(token_hash=record.token_hash, tenant_id=record.tenant_id,
                         address=record.email, expires_at=record.expires_at,
                         scopes=record.scopes, via="token", token_id=record.token_id,
                         created_at=record.created_at)


async def list_tokens(*, tokens: TokenRepo, accounts: AccountRepo, session: SessionRecord,
                      now: datetime) -> list[tuple[TokenRecord, bool]]:
    """The caller's own tokens (no secrets: only hashes exist), each with whether it is
    still alive."""
    account = await accounts.get(tenant_id=session.tenant_id, email=session.address)
    valid_after = account.sessions_valid_after if account else None
    return [(t, _alive(t, valid_after, now))
            for t in await tokens.list_for(tenant_id=session.tenant_id,
                                           email=session.address)]


async def revoke_token(*, tokens: TokenRepo, audit: AuditPublisher, session: SessionRecord,
                       token_id: str, now: datetime, client_ip: str | None = None,
                       user_agent: str | None = None) -> None:
    """Revoke one of the caller's own tokens; someone else's is ``NotFound``."""
    if not is_message_id(token_id) or not await tokens.revoke(
            tenant_id=session.tenant_id, email=session.address, token_id=token_id, now=now):
        raise NotFound("token not found")
    await audit_log.record(audit, tenant_id=session.tenant_id, action="token.revoked",
                           actor=session.address, now=now, detail={"token_id": token_id},
                           client_ip=client_ip, user_agent=user_agent, required=False)
