"""Passkeys (WebAuthn): registered after sign-in, then a sign-in method of their own.

The ceremonies are the ``webauthn`` library's (options, attestation and assertion checks);
this module decides who may, binds each challenge to one person and one use, and keeps the
credentials (``PasskeyRepo``: the public key and its counter, nothing secret).

* **Challenges** travel in a signed, expiring ticket (``tickets``: purpose-bound, under a key
  derived from the code pepper, like the TOTP step's ticket), so no server state is kept per
  page view; the first answer to a ticket claims it (an insert-once marker), so a challenge is
  used once.
* **Discoverable credentials, user verification required**: registration asks for a resident
  key and user verification (PIN or biometric); sign-in asks for user verification and names
  no credential, so the person picks a passkey without typing their address first.
* **Policy** (docs/webmail.md, "Passkeys"): a verified passkey is possession of a device plus
  the person's PIN or biometric, i.e. two factors, phishing-resistant, bound to this site.
  It therefore satisfies every sign-in policy -- ``code``, ``password`` and ``password+code``
  -- and stands in for the authenticator app (no TOTP step after it). A tenant that wants
  none sets ``allow_passkeys: false``: nothing is offered and passkey sign-ins are refused.
* **Relying party**: ``SECMSG_RETRIEVE_WEBAUTHN_RP_ID`` (default: the host of the public
  URL) and ``..._WEBAUTHN_ORIGINS`` (default: the public URL's origin).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from secmsg.retrieve import accounts, service, tickets
from secmsg.retrieve import audit as audit_log
from secmsg.retrieve.accounts import AccountPorts, Client
from secmsg.retrieve.ports import PasskeyRecord, PasskeyRepo, SessionRecord
from secmsg.retrieve.service import NewSession
from secmsg.shared.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized

MAX_PASSKEYS = 20  # per person
MAX_CREDENTIAL_JSON = 64 * 1024  # an attestation with a certificate chain is a few KiB
MAX_NAME = 60


@dataclass(frozen=True)
class PasskeyPorts:
    account: AccountPorts
    passkeys: PasskeyRepo
    public_url: str


@dataclass(frozen=True)
class Ceremony:
    options_json: str  # PublicKeyCredential{Creation,Request}Options, as JSON for the page
    ticket: str  # hand back with the answer


def relying_party(p: PasskeyPorts) -> tuple[str, list[str]]:
    url = urlsplit(p.public_url)
    rp_id = p.account.settings.webauthn_rp_id or (url.hostname or "localhost")
    origins = p.account.settings.webauthn_origins or [f"{url.scheme}://{url.netloc}"]
    return rp_id, origins


def _key(p: PasskeyPorts) -> bytes:
    # Only for the user handle now: it is stored by every authenticator, so it never changes.
    return hmac.new(p.account.settings.code_pepper.encode(), b"secmsg-webauthn-ticket-v1",
                    hashlib.sha256).digest()


def user_handle(p: PasskeyPorts, tenant_id: str, address: str) -> bytes:
    """The WebAuthn user id: stable per person, opaque (no address in it)."""
    return hmac.new(_key(p), f"user\0{tenant_id}\0{address}".encode(), hashlib.sha256).digest()


def _ticket(p: PasskeyPorts, *, purpose: str, tenant_id: str, address: str, challenge: bytes,
            now: datetime) -> str:
    return tickets.seal(p.account.settings.code_pepper, f"passkey-{purpose}",
                        [tenant_id, address, bytes_to_base64url(challenge)],
                        ttl_s=p.account.settings.webauthn_ticket_ttl_s, now=now)


@dataclass(frozen=True)
class _Opened:
    tenant_id: str
    address: str
    challenge: bytes
    nonce: str
    expires_at: datetime


def _open(p: PasskeyPorts, ticket: str, purpose: str, now: datetime) -> _Opened | None:
    opened = tickets.open_(p.account.settings.code_pepper, f"passkey-{purpose}", ticket,
                           now=now)
    if opened is None:
        return None
    tenant_id, address, challenge = opened.fields
    return _Opened(tenant_id, address, base64url_to_bytes(challenge), opened.nonce,
                   opened.expires_at)


async def _claim(p: PasskeyPorts, opened: _Opened) -> bool:
    return await p.account.markers.claim(f"webauthn-ticket:{opened.nonce}",
                                         expires_at=opened.expires_at)


def _check_size(credential: str) -> None:
    if len(credential) > MAX_CREDENTIAL_JSON:
        raise InvalidInput("credential is too large")


# --- registration (signed in) ----------------------------------------------------------------

async def _allowed(p: PasskeyPorts, tenant_id: str) -> accounts.Policy:
    policy = await accounts.load_policy(p.account, tenant_id)
    if not policy.allow_passkeys:
        raise Forbidden("this organisation does not use passkeys")
    return policy


async def registration_options(p: PasskeyPorts, *, session: SessionRecord,
                               now: datetime) -> Ceremony:
    policy = await _allowed(p, session.tenant_id)
    existing = await p.passkeys.list(tenant_id=session.tenant_id, email=session.address)
    if len(existing) >= MAX_PASSKEYS:
        raise InvalidInput(f"you have {MAX_PASSKEYS} passkeys already; remove one first")
    rp_id, _ = relying_party(p)
    challenge = secrets.token_bytes(32)
    options = generate_registration_options(
        rp_id=rp_id, rp_name=policy.tenant_name, user_name=session.address,
        user_id=user_handle(p, session.tenant_id, session.address),
        user_display_name=session.address, challenge=challenge,
        timeout=p.account.settings.webauthn_ticket_ttl_s * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(r.credential_id))
                             for r in existing])
    return Ceremony(options_to_json(options),
                    _ticket(p, purpose="register", tenant_id=session.tenant_id,
                            address=session.address, challenge=challenge, now=now))


def _transports(credential: str) -> tuple[str, ...]:
    try:
        found = json.loads(credential).get("response", {}).get("transports") or []
    except (ValueError, AttributeError):
        return ()
    return tuple(str(t)[:16] for t in found if isinstance(t, str))[:8]


async def register(p: PasskeyPorts, *, session: SessionRecord, ticket: str, credential: str,
                   name: str, client: Client, now: datetime) -> PasskeyRecord:
    """Check the browser's answer to ``registration_options`` and keep the passkey."""
    _check_size(credential)
    await _allowed(p, session.tenant_id)
    opened = _open(p, ticket, "register", now)
    if (opened is None or opened.tenant_id != session.tenant_id
            or opened.address != session.address or not await _claim(p, opened)):
        raise InvalidInput("this passkey request has expired or was already used; start "
                           "again")
    rp_id, origins = relying_party(p)
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=opened.challenge,
            expected_rp_id=rp_id, expected_origin=origins, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"the passkey could not be verified: {exc}"[:300]) from None
    label = " ".join(name.split())[:MAX_NAME] or f"Passkey added {now:%d %b %Y}"
    record = PasskeyRecord(
        credential_id=bytes_to_base64url(verified.credential_id), tenant_id=session.tenant_id,
        email=session.address, public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count, transports=_transports(credential), name=label,
        created_at=now, backed_up=verified.credential_backed_up)
    if not await p.passkeys.add(record):
        raise Conflict("this passkey is registered already")
    if await p.account.accounts.get(tenant_id=session.tenant_id, email=session.address) is None:
        await p.account.accounts.create(tenant_id=session.tenant_id, email=session.address,
                                        password_hash=None, now=now)
    await audit_log.record(p.account.audit, tenant_id=session.tenant_id,
                           action="passkey.added", actor=session.address, now=now,
                           client_ip=client.ip, user_agent=client.user_agent)
    return record


async def list_passkeys(p: PasskeyPorts, *, session: SessionRecord) -> list[PasskeyRecord]:
    return await p.passkeys.list(tenant_id=session.tenant_id, email=session.address)


async def remove(p: PasskeyPorts, *, session: SessionRecord, credential_id: str,
                 client: Client, now: datetime) -> None:
    if not await p.passkeys.remove(tenant_id=session.tenant_id, email=session.address,
                                   credential_id=credential_id):
        raise NotFound("no such passkey")
    await audit_log.record(p.account.audit, tenant_id=session.tenant_id,
                           action="passkey.removed", actor=session.address, now=now,
                           client_ip=client.ip, user_agent=client.user_agent)


# --- sign-in ---------------------------------------------------------------------------------

async def signin_options(p: PasskeyPorts, *, tenant_id: str, now: datetime) -> Ceremony:
    """The same for every tenant id, known or not (the page must not tell them apart)."""
    rp_id, _ = relying_party(p)
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=rp_id, challenge=challenge,
        timeout=p.account.settings.webauthn_ticket_ttl_s * 1000,
        user_verification=UserVerificationRequirement.REQUIRED)
    return Ceremony(options_to_json(options),
                    _ticket(p, purpose="signin", tenant_id=tenant_id, address="",
                            challenge=challenge, now=now))


async def sign_in(p: PasskeyPorts, *, tenant_id: str, ticket: str, credential: str,
                  client: Client, now: datetime) -> NewSession:
    """A full sign-in under every policy (see the module docstring); the same refusal for
    every failure, like the other sign-in methods."""
    _check_size(credential)
    a = p.account
    checks = [(f"passkey:ip:{client.ip}", a.settings.verify_attempts_per_ip)]
    await service.check_rate_limits(a.limiter, checks, window_s=a.settings.rate_window_s,
                                    now=now)
    opened = _open(p, ticket, "signin", now)
    if opened is None or opened.tenant_id != tenant_id:
        raise Unauthorized(accounts.BAD_SIGNIN)
    try:
        parsed = parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise Unauthorized(accounts.BAD_SIGNIN) from None
    record = await p.passkeys.get(bytes_to_base64url(parsed.raw_id))
    if record is None or record.tenant_id != tenant_id:
        raise await accounts.fail_signin(a, tenant_id, "", client, now, "passkey")
    handle = parsed.response.user_handle
    if handle is not None and not hmac.compare_digest(
            handle, user_handle(p, tenant_id, record.email)):
        raise await accounts.fail_signin(a, tenant_id, record.email, client, now, "passkey")
    if not await _claim(p, opened):
        raise await accounts.fail_signin(a, tenant_id, record.email, client, now, "passkey")
    rp_id, origins = relying_party(p)
    try:
        verified = verify_authentication_response(
            credential=parsed, expected_challenge=opened.challenge, expected_rp_id=rp_id,
            expected_origin=origins, credential_public_key=base64url_to_bytes(record.public_key),
            credential_current_sign_count=record.sign_count, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise await accounts.fail_signin(a, tenant_id, record.email, client, now,
                                         "passkey") from None
    policy = await accounts.load_policy(a, tenant_id)
    if not policy.allow_passkeys:
        raise await accounts.fail_signin(a, tenant_id, record.email, client, now, "passkey")
    await p.passkeys.used(record.credential_id, sign_count=verified.new_sign_count, now=now)
    return await accounts.passkey_session(a, tenant_id=tenant_id, address=record.email,
                                          policy=policy, client=client, now=now)
