"""Device authorization for toolbars, shaped like RFC 8628.

The toolbar asks for a ``device_code`` (secret, polled with) and a short ``user_code`` (typed
by the person into retrieve while signed in). Approving, denying and redeeming each happen
once: the first decision and the one redemption are inserts of a unique marker (FerretDB has
no atomic conditional update), so two racing pollers never both get a token.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from secmsg.retrieve import tokens as tokens_mod
from secmsg.retrieve.ports import (
    AccountRepo,
    AuditPublisher,
    DeviceRecord,
    DeviceRepo,
    MarkerRepo,
    RateLimiter,
    SessionRecord,
    TokenRepo,
)
from secmsg.retrieve.service import check_rate_limits
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.retrieve.tokens import hash_token as _hash
from secmsg.shared.errors import Forbidden, InvalidInput, NotFound, SecmsgError

# No vowels (no words), no look-alikes: 20^8 ≈ 2^34.6 codes, valid minutes, rate-limited.
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


class DeviceFlowError(SecmsgError):
    """RFC 8628 polling answers: 400 with ``error`` one of the words below."""

    status = 400

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code  # authorization_pending | slow_down | expired_token | access_denied


def new_user_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def normalize_user_code(text: str) -> str:
    raw = "".join(c for c in text.upper() if c.isalnum())
    if len(raw) != 8 or any(c not in _ALPHABET for c in raw):
        raise NotFound("no pending request has this code")
    return f"{raw[:4]}-{raw[4:]}"


@dataclass(frozen=True)
class Authorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    interval: int
    expires_in: int


async def authorize(*, devices: DeviceRepo, limiter: RateLimiter, settings: RetrieveSettings,
                    public_url: str, tenant_id: str, client_name: str, scopes: Iterable[str],
                    client_ip: str, now: datetime) -> Authorization:
    wanted = tokens_mod.check_scopes(scopes)
    await check_rate_limits(limiter, [(f"device:ip:{client_ip}", settings.code_requests_per_ip)],
                 window_s=settings.rate_window_s, now=now)
    device_code = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=settings.device_code_ttl_s)
    for _ in range(5):
        user_code = new_user_code()
        if await devices.insert(DeviceRecord(
                device_hash=_hash(device_code), tenant_id=tenant_id, user_code=user_code,
                client_name=client_name[:100], scopes=wanted, status="pending", email=None,
                created_at=now, expires_at=expires_at, last_poll_at=None)):
            break
    else:  # pragma: no cover - five collisions in 2^34 codes
        raise InvalidInput("could not allocate a user code; try again")
    uri = f"{public_url.rstrip('/')}/device"
    return Authorization(device_code, user_code, uri, f"{uri}?user_code={user_code}",
                         settings.device_poll_interval_s, settings.device_code_ttl_s)


async def pending(*, devices: DeviceRepo, session: SessionRecord, user_code: str,
                  now: datetime) -> DeviceRecord:
    """The live request with this user code for the signed-in person's tenant, else 404."""
    record = await devices.by_user_code(normalize_user_code(user_code))
    if (record is None or record.tenant_id != session.tenant_id or record.expires_at <= now
            or record.status != "pending"):
        raise NotFound("no pending request has this code")
    return record


async def decide(*, devices: DeviceRepo, markers: MarkerRepo, accounts: AccountRepo,
                 limiter: RateLimiter, settings: RetrieveSettings, session: SessionRecord,
                 user_code: str, approve: bool, now: datetime) -> DeviceRecord:
    """Approve or deny, once. Guessing user codes is throttled per person."""
    await check_rate_limits(limiter, [(f"device:approve:{session.tenant_id}:{session.address}",
                            settings.verify_attempts_per_address)],
                 window_s=settings.rate_window_s, now=now)
    record = await pending(devices=devices, session=session, user_code=user_code, now=now)
    if approve and "admin" in record.scopes and await accounts.tenant_role(
            tenant_id=session.tenant_id, email=session.address) != "admin":
        raise Forbidden("only tenant admins may approve the scope admin")
    if not await markers.claim(f"device-decision:{record.device_hash}",
                               expires_at=record.expires_at):
        raise NotFound("no pending request has this code")
    await devices.decide(record.device_hash, status="approved" if approve else "denied",
                         email=session.address)
    return record


async def redeem(*, devices: DeviceRepo, markers: MarkerRepo, tokens: TokenRepo,
                 accounts: AccountRepo, audit: AuditPublisher, settings: RetrieveSettings,
                 device_code: str, client_ip: str | None, user_agent: str | None,
                 now: datetime) -> tokens_mod.IssuedToken:
    """The client's poll: a token once approved, else the RFC 8628 error words."""
    record = await devices.get(_hash(device_code))
    if record is None or record.expires_at <= now:
        raise DeviceFlowError("expired_token", "the device code is unknown or has expired")
    if record.status == "denied":
        raise DeviceFlowError("access_denied", "the request was denied")
    if record.status == "pending":
        too_soon = (record.last_poll_at is not None and now - record.last_poll_at
                    < timedelta(seconds=settings.device_poll_interval_s))
        await devices.polled(record.device_hash, now)
        if too_soon:
            raise DeviceFlowError("slow_down", "polling faster than the interval")
        raise DeviceFlowError("authorization_pending", "not approved yet")
    if record.email is None or not await markers.claim(
            f"device-redeem:{record.device_hash}", expires_at=record.expires_at):
        raise DeviceFlowError("expired_token", "the device code was already used")
    ttl_days = settings.device_token_ttl_days
    issued = await tokens_mod.issue_token(
        tokens=tokens, accounts=accounts, audit=audit, tenant_id=record.tenant_id,
        email=record.email, scopes=record.scopes, client="toolbar",
        label=record.client_name, now=now,
        ttl=timedelta(days=ttl_days) if ttl_days else None, client_ip=client_ip,
        user_agent=user_agent)
    await devices.delete(record.device_hash)
    return issued
