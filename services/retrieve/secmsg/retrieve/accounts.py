# Over 400 lines: the sign-in policy state machine, reviewed in one place
"""Accounts: registration, sign-in per tenant policy, TOTP, password reset, sign out everywhere.

Every sign-in failure is the same ``Unauthorized`` with the same sentence, and costs the same
work whether or not the account exists (a dummy Argon2 verification stands in for a missing
hash).

Throttling (ASVS 5.0 V6.3; docs/security.md):

* per (account, source IP) and per source IP, for every sign-in, register, reset and TOTP try:
  an attacker's guesses from elsewhere never touch the owner's own counters;
* per account from all sources together, in two tiers (a window, then a day: a back-off), for
  password tries and for authenticator (TOTP) codes, so attackers spread over many IPs are
  slowed and TOTP guessing is capped.

The account-wide password tier cannot lock the owner out: the emailed code alone signs in
under the policies ``code`` and ``password``, and under ``password+code`` a try that brings a
valid emailed code (someone holding the mailbox) is not subject to it. The code is checked
first for that reason.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from secmsg.retrieve import audit as audit_log
from secmsg.retrieve import passwords, recovery, service, tickets, tokens, totp
from secmsg.retrieve.metrics import SIGNINS
from secmsg.retrieve.ports import (
    AccountRecord,
    AccountRepo,
    AuditPublisher,
    CodeRepo,
    MarkerRepo,
    PolicyRepo,
    RateLimiter,
    SessionRecord,
    SessionRepo,
    TokenRepo,
)
from secmsg.retrieve.service import CODE_RE, NewSession, hash_code, normalize_address
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.shared.crypto import KeyRing
from secmsg.shared.errors import Conflict, Forbidden, InvalidInput, Unauthorized

BAD_SIGNIN = "the sign-in details are wrong, expired or already used"
SignInMode = Literal["code", "password", "password+code"]


@dataclass(frozen=True)
class AccountPorts:
    settings: RetrieveSettings
    keyring: KeyRing
    codes: CodeRepo
    sessions: SessionRepo
    accounts: AccountRepo
    tokens: TokenRepo
    markers: MarkerRepo
    limiter: RateLimiter
    policies: PolicyRepo
    audit: AuditPublisher


@dataclass(frozen=True)
class Client:
    ip: str
    user_agent: str | None = None


@dataclass(frozen=True)
class Policy:
    signin: SignInMode
    allow_totp: bool
    idle_s: int
    absolute_s: int
    tenant_name: str
    allow_passkeys: bool = True


async def load_policy(p: AccountPorts, tenant_id: str) -> Policy:
    """``tenants.policy`` with the documented defaults; the platform settings are the
    defaults for the timeouts."""
    info: dict[str, Any] = await p.policies.policy(tenant_id)
    raw = info.get("policy") or {}
    mode = raw.get("signin", "code")
    idle = raw.get("session_idle_minutes")
    absolute = raw.get("session_absolute_hours")
    idle_s = int(idle * 60) if isinstance(idle, int | float) and idle > 0 else \
        p.settings.session_idle_s
    abs_s = int(absolute * 3600) if isinstance(absolute, int | float) and absolute > 0 else \
        p.settings.session_max_s
    return Policy(signin=mode if mode in ("code", "password", "password+code") else "code",
                  allow_totp=bool(raw.get("allow_totp", True)), idle_s=min(idle_s, abs_s),
                  absolute_s=abs_s, tenant_name=str(info.get("display_name") or tenant_id),
                  allow_passkeys=bool(raw.get("allow_passkeys", True)))


async def start_session(p: AccountPorts, *, tenant_id: str, address: str, policy: Policy,
                        now: datetime, client: Client | None = None) -> NewSession:
    """A brand-new random token at every sign-in (never a pre-sign-in one reused)."""
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=policy.absolute_s)
    await p.sessions.create(token_hash=tokens.hash_token(token), tenant_id=tenant_id,
                            address=address, now=now, expires_at=expires_at,
                            idle_s=policy.idle_s,
                            user_agent=client.user_agent if client else None)
    SIGNINS.labels("accepted").inc()
    return NewSession(token, expires_at)


DAY_S = 86400


async def _throttle(p: AccountPorts, kind: str, tenant_id: str, address: str, ip: str,
                    now: datetime) -> None:
    """Per (account, source) and per source."""
    s = p.settings
    checks = [(f"{kind}:acct-ip:{tenant_id}:{address}:{ip}", s.verify_attempts_per_address),
              (f"{kind}:ip:{ip}", s.verify_attempts_per_ip)]
    await service.check_rate_limits(p.limiter, checks, window_s=s.rate_window_s, now=now)


async def _account_backoff(p: AccountPorts, kind: Literal["password", "totp"],
                           tenant_id: str, address: str, now: datetime) -> None:
    """Per account from every source together, a window then a day (429 + Retry-After)."""
    s = p.settings
    per_window, per_day = (
        (s.password_attempts_per_account, s.password_attempts_per_account_per_day)
        if kind == "password" else
        (s.totp_attempts_per_account, s.totp_attempts_per_account_per_day))
    key = f"{kind}:acct:{tenant_id}:{address}"
    await service.check_rate_tiers(
        p.limiter, [(key, per_window, s.rate_window_s), (key, per_day, DAY_S)], now=now)


async def _totp_checked(p: AccountPorts, account: AccountRecord, code: str | None,
                        client: Client, now: datetime) -> bool:
    """A TOTP try, throttled per (account, source), per source and per account."""
    await _throttle(p, "totp", account.tenant_id, account.email, client.ip, now)
    await _account_backoff(p, "totp", account.tenant_id, account.email, now)
    return await _totp_ok(p, account, code, now)


async def _consume_code(p: AccountPorts, tenant_id: str, address: str, code: str | None,
                        now: datetime) -> bool:
    # A missing or malformed code still costs a lookup and counts as a wrong try.
    raw = (code or "").strip()
    candidate = raw if CODE_RE.match(raw) else "x" + secrets.token_hex(8)
    return await p.codes.consume(
        tenant_id=tenant_id, address=address,
        code_hash=hash_code(p.settings.code_pepper, tenant_id, address, candidate), now=now,
        max_attempts=p.settings.code_max_attempts)


async def _failed(p: AccountPorts, tenant_id: str, address: str, client: Client,
                  now: datetime, reason: str) -> Unauthorized:
    SIGNINS.labels("rejected").inc()
    await audit_log.record(p.audit, tenant_id=tenant_id, action="signin.failed", actor=address,
                           now=now, detail={"reason": reason}, client_ip=client.ip,
                           user_agent=client.user_agent, required=False)
    return Unauthorized(BAD_SIGNIN)


fail_signin = _failed  # for the other sign-in methods (passkeys)


async def _ensure_account(p: AccountPorts, tenant_id: str, address: str,
                          now: datetime) -> AccountRecord | None:
    account = await p.accounts.get(tenant_id=tenant_id, email=address)
    if account is None:
        await p.accounts.create(tenant_id=tenant_id, email=address, password_hash=None,
                                now=now)
    return account


# --- second-factor tickets ----------------------------------------------------------------

_MFA = "mfa"  # the tickets' purpose


def _make_ticket(p: AccountPorts, tenant_id: str, address: str, now: datetime) -> str:
    """A stateless, signed "first factor passed" ticket; single use via a marker."""
    return tickets.seal(p.settings.code_pepper, _MFA, [tenant_id, address],
                        ttl_s=p.settings.mfa_ticket_ttl_s, now=now)


@dataclass(frozen=True)
class SignInResult:
    session: NewSession | None = None
    mfa_ticket: str | None = None  # set when a TOTP code is needed to finish


async def _totp_ok(p: AccountPorts, account: AccountRecord, code: str | None,
                   now: datetime) -> bool:
    if not account.totp_secret_sealed or not code:
        return False
    if (spare := recovery.normalize(code)) is not None:  # the phone is lost: a recovery code
        return await p.accounts.use_recovery_code(
            tenant_id=account.tenant_id, email=account.email,
            code_hash=recovery.hash_recovery(p.settings.code_pepper, account.tenant_id,
                                             account.email, spare))
    secret = totp.open_sealed(p.keyring, account.tenant_id, account.totp_secret_sealed)
    return await totp.verify(markers=p.markers, secret=secret, code=code,
                             tenant_id=account.tenant_id, email=account.email, now=now)


async def _finish(p: AccountPorts, *, tenant_id: str, address: str, policy: Policy,
                  account: AccountRecord | None, totp_code: str | None, method: str,
                  client: Client, now: datetime) -> SignInResult:
    if account is not None and account.totp_secret_sealed and policy.allow_totp:
        if totp_code is None:
            return SignInResult(mfa_ticket=_make_ticket(p, tenant_id, address, now))
        if not await _totp_checked(p, account, totp_code, client, now):
            raise await _failed(p, tenant_id, address, client, now, "totp")
        method += "+totp"
    new = await start_session(p, tenant_id=tenant_id, address=address, policy=policy, now=now,
                              client=client)
    await audit_log.record(p.audit, tenant_id=tenant_id, action="signin.succeeded",
                           actor=address, now=now, detail={"method": method},
                           client_ip=client.ip, user_agent=client.user_agent)
    return SignInResult(session=new)


async def sign_in(p: AccountPorts, *, tenant_id: str, email: str, code: str | None,
                  password: str | None, totp_code: str | None, client: Client,
                  now: datetime) -> SignInResult:
    """Sign in as the tenant's policy says: ``code`` (emailed code), ``password`` (password,
    or the emailed code as the fallback), ``password+code`` (both). Then TOTP if enrolled."""
    address = normalize_address(email)
    policy = await load_policy(p, tenant_id)
    use_password = password is not None and policy.signin != "code"
    await _throttle(p, "signin", tenant_id, address, client.ip, now)
    account = await p.accounts.get(tenant_id=tenant_id, email=address)
    needs_code = policy.signin == "password+code" or not use_password
    code_ok = await _consume_code(p, tenant_id, address, code, now) if needs_code else False
    password_ok = False
    if use_password:
        if not code_ok:
            # Guesses from everywhere together back off; a try with a valid emailed code is
            # the mailbox's owner, whom no one else's guesses may lock out.
            await _account_backoff(p, "password", tenant_id, address, now)
        # Always a full Argon2 verification: a missing account costs the same (dummy hash).
        password_ok = await passwords.verify_password(
            account.password_hash if account else None, password or "")
    if policy.signin == "password+code":
        ok = password_ok and code_ok
    elif use_password:
        ok = password_ok
    else:
        ok = code_ok
    if not ok:
        raise await _failed(p, tenant_id, address, client, now,
                            "password" if use_password else "code")
    if account is None:
        await _ensure_account(p, tenant_id, address, now)
    method = "password+code" if policy.signin == "password+code" else (
        "password" if use_password else "code")
    return await _finish(p, tenant_id=tenant_id, address=address, policy=policy,
                         account=account, totp_code=totp_code, method=method, client=client,
                         now=now)


async def passkey_session(p: AccountPorts, *, tenant_id: str, address: str, policy: Policy,
                          client: Client, now: datetime) -> NewSession:
    """After a verified passkey (``passkeys.sign_in``): a session under every policy, with no
    TOTP step -- the passkey with user verification is itself two factors."""
    new = await start_session(p, tenant_id=tenant_id, address=address, policy=policy, now=now)
    await audit_log.record(p.audit, tenant_id=tenant_id, action="signin.succeeded",
                           actor=address, now=now, detail={"method": "passkey"},
                           client_ip=client.ip, user_agent=client.user_agent)
    return new


async def complete_totp(p: AccountPorts, *, ticket: str, code: str, client: Client,
                        now: datetime) -> NewSession:
    """Second step of a sign-in that needs TOTP: the ticket from the first plus the code."""
    opened = tickets.open_(p.settings.code_pepper, _MFA, ticket, now=now)
    if opened is None:
        raise Unauthorized(BAD_SIGNIN)
    tenant_id, address = opened.fields
    account = await p.accounts.get(tenant_id=tenant_id, email=address)
    if account is None:
        await _throttle(p, "totp", tenant_id, address, client.ip, now)
        raise await _failed(p, tenant_id, address, client, now, "totp")
    if not await _totp_checked(p, account, code, client, now):
        raise await _failed(p, tenant_id, address, client, now, "totp")
    if not await p.markers.claim(f"mfa-ticket:{opened.nonce}", expires_at=opened.expires_at):
        raise Unauthorized(BAD_SIGNIN)
    policy = await load_policy(p, tenant_id)
    result = await _finish(p, tenant_id=tenant_id, address=address, policy=policy,
                           account=None, totp_code=None, method="totp", client=client, now=now)
    assert result.session is not None
    return result.session


async def register(p: AccountPorts, *, tenant_id: str, email: str, code: str, password: str,
                   client: Client, now: datetime) -> NewSession:
    """Prove the address with the emailed code, set a password, get a session.

    The password is checked before the code is used, so a refused password does not burn
    the code."""
    address = normalize_address(email)
    policy = await load_policy(p, tenant_id)
    await passwords.check_password(password, email=address, tenant_name=policy.tenant_name,
                                   range_url=p.settings.pwned_range_url)
    await _throttle(p, "signin", tenant_id, address, client.ip, now)
    if not await _consume_code(p, tenant_id, address, code, now):
        raise await _failed(p, tenant_id, address, client, now, "code")
    account = await p.accounts.get(tenant_id=tenant_id, email=address)
    if account is not None and account.password_hash is not None:
        raise Conflict("this address already has a password; sign in or reset it")
    hashed = await passwords.hash_password(password)
    created = account is None and await p.accounts.create(
        tenant_id=tenant_id, email=address, password_hash=hashed, now=now)
    if not created:  # a code-only account (or one created concurrently) gets the password
        await p.accounts.set_password(tenant_id=tenant_id, email=address,
                                      password_hash=hashed, now=now)
    await audit_log.record(p.audit, tenant_id=tenant_id, action="recipient.registered",
                           actor=address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)
    return await start_session(p, tenant_id=tenant_id, address=address, policy=policy, now=now,
                               client=client)


async def reset_password(p: AccountPorts, *, tenant_id: str, email: str, code: str,
                         password: str, totp_code: str | None, client: Client,
                         now: datetime) -> NewSession:
    """New password by emailed code (plus TOTP when enrolled: a reset must not skip the
    second factor). Every earlier session and token dies."""
    address = normalize_address(email)
    policy = await load_policy(p, tenant_id)
    await passwords.check_password(password, email=address, tenant_name=policy.tenant_name,
                                   range_url=p.settings.pwned_range_url)
    await _throttle(p, "signin", tenant_id, address, client.ip, now)
    account = await p.accounts.get(tenant_id=tenant_id, email=address)
    code_ok = await _consume_code(p, tenant_id, address, code, now)
    if account is not None and account.totp_secret_sealed and policy.allow_totp:
        code_ok = code_ok and await _totp_checked(p, account, totp_code, client, now)
    if not code_ok or account is None:
        raise await _failed(p, tenant_id, address, client, now, "reset")
    await p.accounts.set_password(tenant_id=tenant_id, email=address,
                                  password_hash=await passwords.hash_password(password), now=now)
    await _kill_all(p, tenant_id, address, now)
    await audit_log.record(p.audit, tenant_id=tenant_id, action="password.reset",
                           actor=address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)
    # The new session is created after the cut-off, so it survives it.
    return await start_session(p, tenant_id=tenant_id, address=address, policy=policy,
                               now=now + timedelta(milliseconds=1), client=client)


async def _kill_all(p: AccountPorts, tenant_id: str, address: str, now: datetime) -> None:
    await p.accounts.set_sessions_valid_after(tenant_id=tenant_id, email=address, at=now)
    await p.sessions.delete_all(tenant_id=tenant_id, address=address)
    await p.tokens.revoke_all(tenant_id=tenant_id, email=address, now=now)


async def logout_everywhere(p: AccountPorts, *, session: SessionRecord, client: Client,
                            now: datetime) -> None:
    """Every session and token of this person, on every device, ends now."""
    await _ensure_account(p, session.tenant_id, session.address, now)
    await _kill_all(p, session.tenant_id, session.address, now)
    await audit_log.record(p.audit, tenant_id=session.tenant_id, action="signout.all",
                           actor=session.address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    uri: str


async def start_totp(p: AccountPorts, *, session: SessionRecord, now: datetime
                     ) -> TotpEnrolment:
    policy = await load_policy(p, session.tenant_id)
    if not policy.allow_totp:
        raise Forbidden("this organisation does not use authenticator apps")
    await _ensure_account(p, session.tenant_id, session.address, now)
    secret = totp.new_secret()
    await p.accounts.set_totp_pending(tenant_id=session.tenant_id, email=session.address,
                                      sealed=totp.seal(p.keyring, session.tenant_id, secret))
    return TotpEnrolment(secret, totp.provisioning_uri(secret, email=session.address,
                                                       issuer=policy.tenant_name))


async def confirm_totp(p: AccountPorts, *, session: SessionRecord, code: str, client: Client,
                       now: datetime) -> None:
    """The first code from the app proves it holds the secret; from then on it is required."""
    await _throttle(p, "totp", session.tenant_id, session.address, client.ip, now)
    account = await p.accounts.get(tenant_id=session.tenant_id, email=session.address)
    if account is None or not account.totp_pending_sealed:
        raise InvalidInput("start the authenticator enrolment first")
    secret = totp.open_sealed(p.keyring, session.tenant_id, account.totp_pending_sealed)
    if not await totp.verify(markers=p.markers, secret=secret, code=code,
                             tenant_id=session.tenant_id, email=session.address, now=now):
        raise Unauthorized("the authenticator code is wrong")
    await p.accounts.set_totp(tenant_id=session.tenant_id, email=session.address,
                              sealed=account.totp_pending_sealed)
    await audit_log.record(p.audit, tenant_id=session.tenant_id, action="totp.enabled",
                           actor=session.address, now=now, client_ip=client.ip,
                           user_agent=client.user_agent)


async def second_factor_ok(p: AccountPorts, account: AccountRecord, code: str | None,
                           client: Client, now: datetime) -> bool:
    """An authenticator (or recovery) code of an enrolled account, throttled as at sign-in:
    for actions that must ask for a fresh one (turning the authenticator off)."""
    return await _totp_checked(p, account, code, client, now)
