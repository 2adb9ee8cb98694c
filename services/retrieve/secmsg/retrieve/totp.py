"""TOTP second factor (RFC 6238, 30 s steps, 6 digits) with pyotp.

The secret is stored sealed per tenant (``KeyRing.seal_secret(..., TOTP_SECRET_PURPOSE)``).
A code is accepted for the current step or one step either side (clock drift), and each step
once: the accepted step is claimed by inserting a marker, so a replayed code -- even two
submissions racing -- is refused.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime, timedelta

import pyotp

from secmsg.retrieve.ports import MarkerRepo
from secmsg.shared.crypto import TOTP_SECRET_PURPOSE, KeyRing

STEP_S = 30
_CODE_RE = re.compile(r"^[0-9]{6}$")


def new_secret() -> str:
    return pyotp.random_base32(length=32)  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, *, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def seal(keyring: KeyRing, tenant_id: str, secret: str) -> str:
    return keyring.seal_secret(tenant_id, TOTP_SECRET_PURPOSE, secret)


def open_sealed(keyring: KeyRing, tenant_id: str, sealed: str) -> str:
    return keyring.open_secret(tenant_id, TOTP_SECRET_PURPOSE, sealed)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step ``code`` belongs to (now, or one step either side), else None."""
    code = code.strip()
    if not _CODE_RE.match(code):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_S
    found = None
    for step in (current - 1, current, current + 1):  # all three: no early exit to time
        if hmac.compare_digest(totp.at(step * STEP_S), code):
            found = step
    return found


async def verify(*, markers: MarkerRepo, secret: str, code: str, tenant_id: str, email: str,
                 now: datetime) -> bool:
    step = matching_step(secret, code, now)
    if step is None:
        return False
    key = f"totp:{tenant_id}:{email}:{step}"
    return await markers.claim(key, expires_at=now + timedelta(seconds=STEP_S * 3))
