"""Password hashing (Argon2id, OWASP parameters) and the password policy.

Hashing runs in a worker thread: 19 MiB and two passes would otherwise stall every request on
the event loop. Unknown accounts are verified against a dummy hash made with the same
parameters, so a sign-in costs the same whether or not the address exists.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import urllib.request

import zxcvbn
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import Type
from zxcvbn import matching

from secmsg.shared.errors import InvalidInput

log = logging.getLogger(__name__)

MIN_LENGTH = 12
MAX_LENGTH = 128  # the request models refuse longer ones (422); ASVS asks for >= 64
# zxcvbn refuses (ValueError) anything longer than this; it judges the first 72 characters, a
# lower bound of the whole password's strength (more characters never make it weaker).
ESTIMATOR_MAX = 72
MIN_SCORE = 3
# OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32,
                        salt_len=16, type=Type.ID)


class WeakPassword(InvalidInput):
    code = "weak_password"


@functools.cache
def _dummy_hash() -> str:
    return HASHER.hash("secmsg dummy password for unknown accounts")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True iff ``stored`` is a hash of ``password``; with no hash, the same work, False."""
    return await asyncio.to_thread(_verify, stored, password[:MAX_LENGTH * 4])


def _breached(password: str) -> bool:
    # zxcvbn's bundled frequency list: the most common passwords of public breaches.
    return password.lower() in matching.RANKED_DICTIONARIES["passwords"]


async def _breached_online(url: str, password: str, timeout_s: float) -> bool:
    return await asyncio.to_thread(_pwned_range, url, password, timeout_s)


def _pwned_range(url: str, password: str, timeout_s: float) -> bool:
    """k-anonymity range query (Have I Been Pwned shape): only 5 hex chars of the SHA-1
    leave the platform. Unreachable means "not known breached" (the offline checks stand)."""
    digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
    try:
        req = urllib.request.Request(f"{url.rstrip('/')}/{digest[:5]}",  # noqa: S310
                                     headers={"Add-Padding": "true"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            body = resp.read(4 << 20).decode("ascii", "replace")
    except OSError as exc:
        log.warning("breached-password range API unavailable (%s)", type(exc).__name__)
        return False
    for line in body.splitlines():
        suffix, _, count = line.partition(":")
        if suffix.strip() == digest[5:] and count.strip() not in ("", "0"):
            return True
    return False


async def check_password(password: str, *, email: str, tenant_name: str,
                         range_url: str | None = None, range_timeout_s: float = 3.0) -> None:
    """Refuse too short, too long, commonly breached or guessable passwords (ASVS 6.2)."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"the password may have at most {MAX_LENGTH} characters")
    if _breached(password):
        raise WeakPassword("this password is in lists of breached passwords; choose another")
    local = email.partition("@")[0]
    result = await asyncio.to_thread(zxcvbn.zxcvbn, password[:ESTIMATOR_MAX],
                                     user_inputs=[email, local, tenant_name],
                                     max_length=ESTIMATOR_MAX)
    if int(result["score"]) < MIN_SCORE:
        raise WeakPassword("the password is too easy to guess; a few unrelated words work "
                           "well")
    if range_url and await _breached_online(range_url, password, range_timeout_s):
        raise WeakPassword("this password is in lists of breached passwords; choose another")
