# Over 400 lines: the recipient use cases share one access check (downloads split out)
"""retrieve's logic: sign-in code requests, sessions, listing and reading messages (the
sign-in itself, per tenant policy, is ``accounts``; attachment downloads are ``downloads``).

Plain async functions over the ports; no HTTP or driver types here. Anything "not yours, not
there, expired or purged" is the same ``NotFound``, so a probe learns nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from secmsg.retrieve import tokens as tokens_mod
from secmsg.retrieve.metrics import (
    CLEANUP_DELETED,
    CODE_MAIL_ERRORS,
    CODE_REQUESTS_DONE,
    CODES,
    DECRYPT_SECONDS,
)
from secmsg.retrieve.ports import (
    AccountRepo,
    AuditPublisher,
    BlobReader,
    CodeMailer,
    CodeRepo,
    ExpiredCleaner,
    MessageRecord,
    MessageRepo,
    RateLimiter,
    SessionRecord,
    SessionRepo,
    TenantRepo,
    TokenRepo,
)
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.retrieve.tokens import hash_token
from secmsg.shared import crypto
from secmsg.shared.blobstore import object_key
from secmsg.shared.crypto import KeyRing
from secmsg.shared.documents import MAILBOX_KEY_LEN, mailbox_key
from secmsg.shared.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    SecmsgError,
    TooManyRequests,
    Unauthorized,
)
from secmsg.shared.events import (
    MessageOpened,
    Recipient,
    StoredObject,
)
from secmsg.shared.ids import is_message_id

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 1024 * 1024  # plaintext per write of a download (16 segments of 64 KiB)
CODE_RE = re.compile(r"^[0-9]{8}$")


class RateLimited(TooManyRequests):
    def __init__(self, detail: str, retry_after: float):
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after + 0.999))


# --- identities, codes, tokens ---------------------------------------------------------------

def normalize_address(email: str) -> str:
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if (not at or not local or not domain or len(address) > 320
            or any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in address)):
        raise InvalidInput("email is not a valid address")
    return address


def new_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def hash_code(pepper: str, tenant_id: str, address: str, code: str) -> str:
    # Bound to tenant and address so a hash copied to another row is worthless; the pepper
    # (not in the database) makes a stolen table useless for brute-forcing 10^8 codes.
    msg = "\0".join((tenant_id, address, code)).encode()
    return hmac.new(pepper.encode(), msg, hashlib.sha256).hexdigest()


async def check_rate_limits(limiter: RateLimiter, checks: list[tuple[str, int]], *,
                            window_s: int, now: datetime) -> None:
    """Count one hit on every (key, limit); ``RateLimited`` with the longest wait if any is
    over (all are counted either way, so probing one key does not spare the others)."""
    await check_rate_tiers(limiter, [(key, limit, window_s) for key, limit in checks],
                           now=now)


async def check_rate_tiers(limiter: RateLimiter, checks: list[tuple[str, int, int]], *,
                           now: datetime) -> None:
    """``check_rate_limits`` with a window per check: (key, limit, window_s). The same key
    with a short and a long window is a back-off: past the first limit the wait is the rest
    of the short window, past the second the rest of the long one."""
    worst: float | None = None
    for key, limit, window_s in checks:
        retry = await limiter.hit(key=key, limit=limit, window_s=window_s, now=now)
        if retry is not None:
            worst = max(worst or 0.0, retry)
    if worst is not None:
        raise RateLimited("too many requests, try again later", worst)


# --- sign-in ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CodeRequest:
    tenant_id: str
    address: str
    purpose: str = "signin"  # what the mail says it is for: signin | register | reset


async def request_code(*, tenant_id: str, email: str, client_ip: str, limiter: RateLimiter,
                       settings: RetrieveSettings, now: datetime,
                       purpose: str = "signin") -> CodeRequest:
    """Admit a code request (rate limits) -- identical work whatever the address.

    The lookup and the email happen afterwards in ``send_code_if_known``, off the response
    path, so neither status, body nor timing says whether the address has messages.
    """
    address = normalize_address(email)
    try:
        await check_rate_limits(limiter, [(f"code:addr:{tenant_id}:{address}",
                                settings.code_requests_per_address),
                               (f"code:ip:{client_ip}", settings.code_requests_per_ip)],
                     window_s=settings.rate_window_s, now=now)
    except RateLimited:
        CODES.labels("rate_limited").inc()
        raise
    CODES.labels("accepted").inc()
    return CodeRequest(tenant_id, address, purpose)


async def _known(*, request: CodeRequest, messages: MessageRepo,
                 accounts: AccountRepo | None, now: datetime) -> bool:
    if await messages.has_live(tenant_id=request.tenant_id, address=request.address, now=now):
        return True
    if accounts is None:
        return False
    # A registered person (their messages may all have expired) or a tenant user.
    account = await accounts.get(tenant_id=request.tenant_id, email=request.address)
    if account is not None and account.password_hash is not None:
        return True
    return await accounts.tenant_role(tenant_id=request.tenant_id,
                                      email=request.address) is not None


async def send_code_if_known(*, request: CodeRequest, messages: MessageRepo,
                             tenants: TenantRepo, codes: CodeRepo, mailer: CodeMailer,
                             settings: RetrieveSettings, now: datetime,
                             accounts: AccountRepo | None = None) -> bool:
    """Send a code only if the address is known to the tenant (a live message for it; with
    ``accounts``, also a registered account or a tenant user). Never raises. Counted in
    ``secmsg_retrieve_code_requests_done_total`` once finished, whatever the outcome."""
    try:
        if not await _known(request=request, messages=messages, accounts=accounts, now=now):
            return False
        name = await tenants.display_name(request.tenant_id) or request.tenant_id
        code = new_code()
        await codes.replace(tenant_id=request.tenant_id, address=request.address,
                            code_hash=hash_code(settings.code_pepper, request.tenant_id,
                                                request.address, code),
                            expires_at=now + timedelta(seconds=settings.code_ttl_s), now=now)
        await mailer.send_code(to=request.address, code=code, tenant_name=name,
                               ttl_minutes=max(1, settings.code_ttl_s // 60),
                               tenant_id=request.tenant_id, purpose=request.purpose)
    except SecmsgError as exc:
        CODE_MAIL_ERRORS.inc()
        log.warning("sign-in code not sent: %s", exc.detail)
        return False
    except Exception:
        CODE_MAIL_ERRORS.inc()
        log.exception("sign-in code not sent")
        return False
    finally:
        CODE_REQUESTS_DONE.inc()
    return True


@dataclass(frozen=True)
class NewSession:
    token: str
    expires_at: datetime


async def authenticate(*, token: str | None, sessions: SessionRepo,
                       settings: RetrieveSettings, now: datetime,
                       tokens: TokenRepo | None = None, accounts: AccountRepo | None = None,
                       scope: str = "read", session_only: bool = False) -> SessionRecord:
    """The caller behind a session token or a bearer ``smt_`` token (with ``scope``).

    ``session_only``: account management (approving devices, listing tokens, sign out
    everywhere) needs the person at a browser, not a toolbar's token."""
    if not token:
        raise Unauthorized("sign-in required")
    if tokens_mod.looks_like_token(token):
        if tokens is None or accounts is None or session_only:
            raise Unauthorized("this needs a signed-in session, not an access token")
        return await tokens_mod.verify_token(token=token, tokens=tokens, accounts=accounts,
                                             now=now, scope=scope)
    session = await sessions.touch(token_hash=hash_token(token), now=now,
                                   idle_s=settings.session_idle_s)
    if session is None:
        raise Unauthorized("the session is unknown or has expired; sign in again")
    if accounts is not None and session.created_at is not None:
        account = await accounts.get(tenant_id=session.tenant_id, email=session.address)
        if (account is not None and account.sessions_valid_after is not None
                and session.created_at < account.sessions_valid_after):
            raise Unauthorized("the session is unknown or has expired; sign in again")
    return session


async def logout(*, token: str | None, sessions: SessionRepo) -> None:
    if token:
        await sessions.delete(hash_token(token))


# --- expiry clean-up -------------------------------------------------------------------------

async def clean_expired(*, janitor: ExpiredCleaner, settings: RetrieveSettings,
                        now: datetime) -> dict[str, int]:
    """One pass deleting expired sign-in state; counts go to the log and the metric."""
    counts = await janitor.delete_expired(now=now, session_idle_s=settings.session_idle_s)
    for collection, n in counts.items():
        CLEANUP_DELETED.labels(collection).inc(n)
    if any(counts.values()):
        log.info("expired documents deleted: %s",
                 ", ".join(f"{c}={n}" for c, n in sorted(counts.items())))
    return counts


async def run_cleanup(*, janitor: ExpiredCleaner, settings: RetrieveSettings,
                      clock: Callable[[], datetime]) -> None:
    """Clean up every ``cleanup_interval_s`` until cancelled; a failed pass waits for the next.

    Passes are jittered so replicas started together drift apart; overlapping would only
    repeat work.
    """
    while True:
        jitter = 1 + secrets.randbelow(1000) / 5000
        await asyncio.sleep(settings.cleanup_interval_s * jitter)
        try:
            await clean_expired(janitor=janitor, settings=settings, now=clock())
        except SecmsgError as exc:
            log.warning("expiry clean-up failed: %s", exc.detail)
        except Exception:
            log.exception("expiry clean-up failed")


# --- messages --------------------------------------------------------------------------------

def encode_cursor(record: MessageRecord) -> str:
    """The next page's cursor: the listing key of the page's last message (48 lower-case hex
    digits, ``mailbox_key``); the page after it is the ``_id`` range below that key."""
    return mailbox_key(record.received_at, record.message_id)


def decode_cursor(cursor: str) -> str:
    """A listing key; a cursor of the earlier form (base64 of ``<received_at>|<id>``, handed
    out before the listing moved to ``mailbox``) is still accepted and gives the same key."""
    if len(cursor) == MAILBOX_KEY_LEN and _HEX.fullmatch(cursor):
        return cursor
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, mid = raw.partition("|")
        when = datetime.fromisoformat(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid") from None
    if not is_message_id(mid) or when.tzinfo is None:
        raise InvalidInput("cursor is not valid")
    return mailbox_key(when, mid)


_HEX = re.compile(r"[0-9a-f]+")


async def list_messages(*, session: SessionRecord, messages: MessageRepo, limit: int,
                        cursor: str | None, now: datetime) -> tuple[list[MessageRecord],
                                                                   str | None]:
    after = decode_cursor(cursor) if cursor else None
    page = await messages.list_live(tenant_id=session.tenant_id, address=session.address,
                                    now=now, limit=limit + 1, after=after)
    more = len(page) > limit
    page = page[:limit]
    return page, (encode_cursor(page[-1]) if more and page else None)


async def get_mine(*, session: SessionRecord, message_id: str, messages: MessageRepo,
                    now: datetime) -> MessageRecord:
    if not is_message_id(message_id):
        raise NotFound("message not found")
    record = await messages.get_live(tenant_id=session.tenant_id, message_id=message_id,
                                     address=session.address, now=now)
    if record is None:
        raise NotFound("message not found")
    return record


def check_key(record: MessageRecord, obj: StoredObject) -> None:
    # A record pointing outside its own prefix would be a way to read another tenant's bytes.
    if obj.key != object_key(record.tenant_id, record.message_id, obj.object_id):
        raise IntegrityError(f"object {obj.object_id} has an unexpected storage key")


def read_size(segment_size: int) -> int:
    """Object-store reads of whole sealed segments, about ``DOWNLOAD_CHUNK`` each: every read
    decrypts into one write of many segments, with no bytes carried over between reads."""
    stride = segment_size + crypto.TAG_SIZE
    return stride * max(1, DOWNLOAD_CHUNK // stride)


async def decrypt_stream(*, blobs: BlobReader, keyring: KeyRing, tenant_id: str,
                         obj: StoredObject, start: int, end: int) -> AsyncIterator[bytes]:
    """Plaintext ``start..end`` (inclusive) of ``obj``, reading only the segments needed.

    Only authenticated plaintext is ever yielded; a tampered or truncated segment raises
    ``IntegrityError`` at that point.
    """
    data_key = keyring.unwrap(tenant_id, obj.object_id, obj.wrapped_key)
    plan = crypto.plan_range(obj.size, obj.segment_size, start, end)
    dec = crypto.SegmentDecryptor(data_key, obj.object_id, plaintext_size=obj.size,
                                  segment_size=obj.segment_size, plan=plan)
    spent = 0.0

    def decrypt(chunk: bytes) -> bytes:
        # On the event loop: decrypting on the object store's thread instead (where the next
        # piece is read meanwhile) measured no faster on 2 shared cores (bench.run --only io).
        nonlocal spent
        t0 = time.perf_counter()
        try:
            return dec.update(chunk)
        finally:
            spent += time.perf_counter() - t0

    length = plan.ct_end - plan.ct_start + 1
    try:
        if obj.inline is not None:
            # From the message document (a short one means a truncated record, as a short S3
            # object would).
            if plan.ct_start + length > len(obj.inline):
                raise IntegrityError(f"object {obj.object_id} is shorter than recorded")
            out = decrypt(obj.inline[plan.ct_start:plan.ct_start + length])
            if out:
                yield out
        else:
            async for piece in blobs.get_range(obj.key, plan.ct_start, length,
                                               read_size(obj.segment_size)):
                out = decrypt(piece)
                if out:
                    yield out
        t0 = time.perf_counter()
        last = dec.finalize()
        spent += time.perf_counter() - t0
        if last:
            yield last
    finally:
        DECRYPT_SECONDS.inc(spent)


async def _read_body(*, blobs: BlobReader, keyring: KeyRing, tenant_id: str,
                     obj: StoredObject, max_bytes: int) -> str | None:
    if obj.size > max_bytes:
        return None
    parts = [c async for c in decrypt_stream(blobs=blobs, keyring=keyring, tenant_id=tenant_id,
                                              obj=obj, start=0, end=max(obj.size - 1, 0))]
    return b"".join(parts).decode("utf-8", "replace")


@dataclass(frozen=True)
class MessageView:
    record: MessageRecord
    text: str | None
    html: str | None


def visible_recipients(record: MessageRecord, address: str) -> list[Recipient]:
    """The recipients ``address`` may see: To and Cc, and itself when it was blind-copied.
    Nobody learns who else was on Bcc."""
    me = address.lower()
    return [r for r in record.recipients if r.kind != "bcc" or r.address.lower() == me]


def clip_header(value: str | None, n: int = 512) -> str | None:
    return value[:n] if value else None


async def read_message(*, session: SessionRecord, message_id: str, messages: MessageRepo,
                       blobs: BlobReader, keyring: KeyRing, audit: AuditPublisher,
                       client_ip: str | None, user_agent: str | None, now: datetime,
                       max_body_bytes: int) -> MessageView:
    record = await get_mine(session=session, message_id=message_id, messages=messages,
                             now=now)
    # Audited before any content is read: no audit, no access (DependencyUnavailable -> 503).
    await audit.publish(MessageOpened(
        tenant_id=record.tenant_id, message_id=record.message_id, event_id=uuid.uuid4().hex,
        recipient=session.address, client_ip=client_ip, user_agent=clip_header(user_agent),
        occurred_at=now, received_at=record.received_at))
    bodies: dict[str, str | None] = {"text": None, "html": None}
    for obj in record.objects:
        if obj.role in bodies and bodies[obj.role] is None:
            check_key(record, obj)
            bodies[obj.role] = await _read_body(blobs=blobs, keyring=keyring,
                                                tenant_id=record.tenant_id, obj=obj,
                                                max_bytes=max_body_bytes)
    return MessageView(record, bodies["text"], bodies["html"])
