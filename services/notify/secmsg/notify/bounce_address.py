"""The envelope sender (MAIL FROM) that lets a bounce find its notification (VERP).

``SECMSG_NOTIFY_BOUNCE_ADDRESS`` ``bounces@notify.example`` becomes, for one notification,
``bounces+<tenant>.<message_id>.<sha256(address lower)[:16]>@notify.example``. A bounce report
comes back to that address; :func:`parse_bounce_address` turns it back into the tenant, the
message and the recipient's hash -- the address itself never travels in the tag (a mailbox
address in every bounce path would leak it to relays and logs).

Only characters a dot-atom local part allows, all lowercase: tenant ids are
``[a-z0-9-]``, message ids are hex, the hash is hex.
"""

from __future__ import annotations

import re
from hashlib import sha256

from secmsg.shared.subjects import TENANT_ID_RE

ADDRESS_HASH_LEN = 16
_TAG = re.compile(r"([a-z0-9][a-z0-9-]{0,39})\.([0-9a-f]{1,64})\.([0-9a-f]{16})\Z")


def address_hash(address: str) -> str:
    return sha256(address.strip().lower().encode()).hexdigest()[:ADDRESS_HASH_LEN]


def bounce_tag(tenant_id: str, message_id: str, address: str) -> str:
    """``<tenant>.<message_id>.<sha256(address lower)[:16]>``; ValueError for ids that
    could not be parsed back (they never come from a validated event)."""
    tag = f"{tenant_id}.{message_id}.{address_hash(address)}"
    if not TENANT_ID_RE.match(tenant_id) or _TAG.match(tag) is None:
        raise ValueError("tenant or message id unusable in a bounce address")
    return tag


def bounce_address(base: str, *, tenant_id: str, message_id: str, address: str) -> str:
    """``base`` (``local@domain``) with the tag added to the local part after a ``+``."""
    local, at, domain = base.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("bounce address must be local@domain")
    return f"{local}+{bounce_tag(tenant_id, message_id, address)}@{domain}"


def parse_bounce_address(value: str, *, base: str | None = None
                         ) -> tuple[str, str, str] | None:
    """``(tenant_id, message_id, address_hash)`` from a tagged address, else None.

    With ``base``, the local part before ``+`` and the domain must also match it (case
    does not matter: relays may change it). Angle brackets around ``value`` are accepted.
    """
    value = value.strip().removeprefix("<").removesuffix(">").strip()
    local, at, domain = value.rpartition("@")
    if not at:
        return None
    prefix, plus, tag = local.rpartition("+")
    if not plus or not prefix:
        return None
    if base is not None:
        b_local, _, b_domain = base.rpartition("@")
        if prefix.lower() != b_local.lower() or domain.lower() != b_domain.lower():
            return None
    m = _TAG.match(tag.lower())
    if m is None:
        return None
    return m.group(1), m.group(2), m.group(3)
