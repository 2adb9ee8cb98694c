"""Signed, expiring tickets: a little state handed to the browser and taken back unchanged.

Used for "first factor passed, TOTP code next" (``accounts``) and for a passkey ceremony's
challenge (``passkeys``), so no server state is kept per page view. A ticket is
``base64url(body + HMAC-SHA256(key, body))`` with the body a JSON list
``[purpose, expires (unix s), nonce, *fields]``.

* **Purpose-bound**: the key is derived from the secret *and* the purpose, and the purpose is
  in the body, so a ticket sealed for one use (say ``passkey-signin``) never opens for another
  (``mfa``).
* **Expiring**: refused at and after its expiry second.
* **Single use is the caller's**: each ticket carries a random ``nonce``; the caller claims it
  (an insert-once marker, kept until ``expires_at``) when the ticket is used.

Anything that is not a ticket we sealed -- garbage, a wrong key, a changed byte, another
purpose, an expired one -- opens as ``None``; the caller answers with its usual refusal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

_MAC = 32  # bytes of HMAC-SHA256
_VERSION = b"secmsg-ticket-v2"  # v1 keys were one per module, without the purpose in them


@dataclass(frozen=True)
class Opened:
    fields: tuple[str, ...]  # what was sealed, in order
    nonce: str  # claim it to use the ticket once
    expires_at: datetime


def _key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), _VERSION + b"\0" + purpose.encode(),
                    hashlib.sha256).digest()


def seal(secret: str, purpose: str, fields: Sequence[str], *, ttl_s: int,
         now: datetime) -> str:
    """A ticket for ``purpose`` carrying ``fields``, valid for ``ttl_s`` seconds from ``now``."""
    expires = int(now.timestamp()) + ttl_s
    body = json.dumps([purpose, expires, secrets.token_hex(16), *fields],
                      separators=(",", ":")).encode()
    mac = hmac.new(_key(secret, purpose), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def open_(secret: str, purpose: str, ticket: str, *, now: datetime) -> Opened | None:
    """The fields of a ticket ``seal`` made for ``purpose`` and not yet expired, else None."""
    try:
        raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
    except (ValueError, binascii.Error):  # not base64, or not ASCII
        return None
    body, mac = raw[:-_MAC], raw[-_MAC:]
    if len(raw) <= _MAC or not hmac.compare_digest(
            mac, hmac.new(_key(secret, purpose), body, hashlib.sha256).digest()):
        return None
    kind, expires, nonce, *fields = json.loads(body)  # ours: the MAC says so
    if kind != purpose or int(expires) <= int(now.timestamp()):
        return None
    return Opened(tuple(fields), nonce, datetime.fromtimestamp(int(expires), UTC))
