"""A keyring source plugin for tests/shared/test_keysource.py (SECMSG_KEYRING_SOURCE)."""

from __future__ import annotations

import base64
import os

from secmsg.shared.keysource import KeyringSettings

CALLS: list[KeyringSettings] = []
KEY_7 = base64.b64encode(b"7" * 32).decode()


def from_store(settings: KeyringSettings) -> str:
    """Stands in for a secret store: answers version 7 (and records that it was asked)."""
    CALLS.append(settings)
    return f"7:{KEY_7}\n"


def empty(settings: KeyringSettings) -> str:
    return os.environ.get("SECMSG_TEST_NOTHING", "")


NOT_CALLABLE = "x"
