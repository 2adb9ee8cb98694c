"""Account self-service for a signed-in person: change (or first set) the password, see and end
sessions, turn the authenticator off with a fresh code, recovery codes.

Every rule here asks for proof fitting the change: the current password to change it (a
stolen session alone cannot lock the owner out), a fresh authenticator or recovery code to
turn the authenticator off. Changing the password ends every other session and toolbar token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from secmsg.retrieve import audit as audit_log
from secmsg.retrieve import passwords, recovery, service
from secmsg.retrieve.accounts import (
    AccountPorts,
    Client,
    load_policy,
    second_factor_ok,
    start_session,
)
from secmsg.retrieve.ports import SessionRecord
from secmsg.retrieve.service import NewSession
from secmsg.shared.errors import Forbidden, InvalidInput, NotFound, Unauthorized

WRONG_PASSWORD = "the current password is wrong"  # noqa: S105 (a sentence, not a secret)
WRONG_SECOND_FACTOR = "the authenticator or recovery code is wrong or already used"


def session_id(token_hash: str) -> str:
    """The name of a session on the account page (never its token hash)."""
    return hashlib.sha256(f"session-id:{token_hash}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class SessionView:
    session_id: str
    created_at: datetime | None
    last_seen_at: datetime | None
    device: str
    current: bool


def device_name(user_agent: str | None) -> str:
    """A short, human name for a browser's user agent ("Chrome on Linux")."""
    ua = user_agent or ""
    browser = next((name for key, name in (
        ("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
        ("HeadlessChrome", "Chrome (headless)"), ("Chrome/", "Chrome"),
        ("Safari/", "Safari")) if key in ua), None)
    system = next((name for key, name in (
        ("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"),
        ("Windows", "Windows"), ("Mac OS X", "macOS"), ("Linux", "Linux")) if key in ua),
        None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


async def list_sessions(p: AccountPorts, *, session: SessionRecord,
                        now: datetime) -> list[SessionView]:
    infos = await p.sessions.list_for(tenant_id=session.tenant_id, address=session.address,
                                      now=now)
    return [SessionView(session_id=session_id(i.token_hash), created_at=i.created_at,
                        last_seen_at=i.last_seen_at, device=device_name(i.user_agent),
                        current=i.token_hash == session.token_hash) for i in infos]


async def end_session(p: AccountPorts, *, session: SessionRecord, target: str,
                      client: Client, now: datetime) -> None:
    """End one of this person's sessions, named by ``session_id`` (NotFound otherwise)."""
    infos = await p.sessions.list_for(tenant_id=session.tenant_id, address=session.address,
                                      now=now)
    match = next((i for i in infos if session_id(i.token_hash) == target), None)
    if match is None:
        raise NotFound("no such session of yours (it may have ended already)")
    await p.sessions.delete(match.token_hash)
    await audit_log.record(p.audit, tenant_id=session.tenant_id, action="signout.session",
                           actor=session.address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)


async def end_other_sessions(p: AccountPorts, *, session: SessionRecord, client: Client,
                             now: datetime) -> int:
    """Every other browser session of this person ends; this one stays."""
    n = await p.sessions.delete_others(tenant_id=session.tenant_id, address=session.address,
                                       keep=session.token_hash)
    await audit_log.record(p.audit, tenant_id=session.tenant_id, action="signout.others",
                           actor=session.address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent, detail={"sessions": str(n)})
    return n


async def change_password(p: AccountPorts, *, session: SessionRecord, current: str | None,
                          new: str, client: Client, now: datetime) -> NewSession:
    """Change the password (the current one required when there is one) or set the first one
    (a person who has signed in with codes only). Every session and token ends; the returned
    session replaces this one."""
    policy = await load_policy(p, session.tenant_id)
    if policy.signin == "code":
        raise Forbidden("this organisation signs in with emailed codes only; a password "
                        "would never be asked for")
    account = await p.accounts.get(tenant_id=session.tenant_id, email=session.address)
    s = p.settings
    await service.check_rate_limits(p.limiter, [
        (f"password-change:{session.tenant_id}:{session.address}", s.verify_attempts_per_address),
        (f"password-change:ip:{client.ip}", s.verify_attempts_per_ip)],
        window_s=s.rate_window_s, now=now)
    if account is not None and account.password_hash is not None and not \
            await passwords.verify_password(account.password_hash, current or ""):
        raise Unauthorized(WRONG_PASSWORD)
    await passwords.check_password(new, email=session.address, tenant_name=policy.tenant_name,
                                   range_url=s.pwned_range_url)
    hashed = await passwords.hash_password(new)
    if account is None:
        await p.accounts.create(tenant_id=session.tenant_id, email=session.address,
                                password_hash=None, now=now)
    await p.accounts.set_password(tenant_id=session.tenant_id, email=session.address,
                                  password_hash=hashed, now=now)
    await p.accounts.set_sessions_valid_after(tenant_id=session.tenant_id,
                                              email=session.address, at=now)
    await p.sessions.delete_all(tenant_id=session.tenant_id, address=session.address)
    await p.tokens.revoke_all(tenant_id=session.tenant_id, email=session.address, now=now)
    await audit_log.record(p.audit, tenant_id=session.tenant_id, action="password.changed",
                           actor=session.address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)
    return await start_session(p, tenant_id=session.tenant_id, address=session.address,
                               policy=policy, now=now + timedelta(milliseconds=1),
                               client=client)


async def disable_totp(p: AccountPorts, *, session: SessionRecord, code: str, client: Client,
                       now: datetime) -> None:
    """Turn the authenticator off: only with a fresh code from it (or a recovery code)."""
    account = await p.accounts.get(tenant_id=session.tenant_id, email=session.address)
    if account is None or not account.totp_secret_sealed:
        raise InvalidInput("the authenticator app is not on")
    if not await second_factor_ok(p, account, code.strip(), client, now):
        raise Unauthorized(WRONG_SECOND_FACTOR)
    await p.accounts.set_totp(tenant_id=session.tenant_id, email=session.address, sealed=None)
    await p.accounts.set_recovery_codes(tenant_id=session.tenant_id, email=session.address,
                                        hashes=[])
    await audit_log.record(p.audit, tenant_id=session.tenant_id, action="totp.disabled",
                           actor=session.address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)


async def new_recovery_codes(p: AccountPorts, *, session: SessionRecord, client: Client,
                             now: datetime) -> list[str]:
    """Ten fresh recovery codes (the earlier ones stop working); shown once."""
    account = await p.accounts.get(tenant_id=session.tenant_id, email=session.address)
    if account is None or not account.totp_secret_sealed:
        raise InvalidInput("recovery codes come with the authenticator app: set it up first")
    codes = recovery.new_codes()
    pepper = p.settings.code_pepper
    await p.accounts.set_recovery_codes(
        tenant_id=session.tenant_id, email=session.address,
        hashes=[recovery.hash_recovery(pepper, session.tenant_id, session.address,
                                       str(recovery.normalize(c))) for c in codes])
    await audit_log.record(p.audit, tenant_id=session.tenant_id,
                           action="recovery_codes.issued", actor=session.address, now=now,
                           client_ip=client.ip, user_agent=client.user_agent)
    return codes
