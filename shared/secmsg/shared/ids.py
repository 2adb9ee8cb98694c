"""Identifier and token formats, each defined once: the pattern, how to make one, how to read
one back (tests/shared/test_ids.py checks every ``parse(format(x)) == x``).

* message id: 32 lower-case hex digits (a UUID4 without dashes), made by ingest; it appears in
  links, subjects of events, object keys, ``Nats-Msg-Id``s and every document about the
  message. Other ids of that shape (object ids, token ids, event ids) use the same helpers.
* tenant id: the slug in subjects and links (``secmsg.shared.subjects.TENANT_ID_RE``).
* user token: ``smt_<token id>_<secret>`` -- issued by retrieve, accepted by ingest and
  retrieve; only its SHA-256 (``token_hash``) is ever stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated

from pydantic import StringConstraints

from secmsg.shared.subjects import TENANT_ID_RE

HEX_ID_PATTERN = r"[0-9a-f]{32}"
_HEX_ID = re.compile(HEX_ID_PATTERN)
# The anchored forms, for pydantic/FastAPI ``pattern=`` (path and body parameters).
MESSAGE_ID_PATTERN = rf"^{HEX_ID_PATTERN}$"
TENANT_ID_PATTERN = TENANT_ID_RE.pattern

MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]


def new_id() -> str:
    """A fresh message (or object, token, event) id."""
    return uuid.uuid4().hex


def is_message_id(value: str) -> bool:
    return _HEX_ID.fullmatch(value) is not None


def parse_message_id(value: str) -> str:
    """``value`` if it is a message id; ``ValueError`` otherwise."""
    if not is_message_id(value):
        raise ValueError("not a message id (32 lower-case hex digits)")
    return value


def is_tenant_id(value: str) -> bool:
    return TENANT_ID_RE.fullmatch(value) is not None


# --- user tokens ---------------------------------------------------------------------------

TOKEN_PREFIX = "smt_"  # noqa: S105 - a prefix, not a secret
_SECRET_BYTES = 32  # token_urlsafe(32): 43 characters
_TOKEN = re.compile(rf"{TOKEN_PREFIX}({HEX_ID_PATTERN})_([A-Za-z0-9_-]{{43}})")


@dataclass(frozen=True)
class UserToken:
    """A user (toolbar / webmail) bearer token: ``smt_<token_id>_<secret>``."""

    token_id: str
    secret: str

    @classmethod
    def new(cls) -> UserToken:
        return cls(new_id(), secrets.token_urlsafe(_SECRET_BYTES))

    @classmethod
    def parse(cls, text: str) -> UserToken | None:
        """The token in ``text``, or None if ``text`` is not exactly one."""
        m = _TOKEN.fullmatch(text)
        return cls(m.group(1), m.group(2)) if m else None

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.token_id}_{self.secret}"


def looks_like_user_token(secret: str) -> bool:
    """A bearer secret meant as a user token (an API key never starts with the prefix)."""
    return secret.startswith(TOKEN_PREFIX)


def token_hash(secret: str) -> str:
    """What is stored for a token or an API key: the SHA-256 of the secret, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()
