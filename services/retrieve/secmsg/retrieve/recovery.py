"""Recovery codes: ten single-use codes shown once when the authenticator app is set up, each
standing in for one authenticator code (sign-in, reset, turning the app off) when the phone is
lost. Kept as peppered hashes bound to tenant and address, like the emailed codes."""

from __future__ import annotations

import re
import secrets

from secmsg.retrieve.service import hash_code

COUNT = 10
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud and typed safely
GROUP = 5
_SHAPE = re.compile(rf"^[{ALPHABET}]{{{2 * GROUP}}}$")


def new_codes() -> list[str]:
    """Ten codes, ``xxxxx-xxxxx`` (10 characters from 31: about 49 bits each)."""
    out = []
    for _ in range(COUNT):
        raw = "".join(secrets.choice(ALPHABET) for _ in range(2 * GROUP))
        out.append(f"{raw[:GROUP]}-{raw[GROUP:]}")
    return out


def normalize(code: str) -> str | None:
    """The canonical form of a typed recovery code, or None when it cannot be one (then it
    may be an authenticator code)."""
    raw = re.sub(r"[\s-]", "", code).lower()
    return raw if _SHAPE.match(raw) else None


def hash_recovery(pepper: str, tenant_id: str, address: str, code: str) -> str:
    return hash_code(pepper, tenant_id, address, "recovery:" + code)
