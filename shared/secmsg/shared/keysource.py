"""Where the platform keyring comes from: the environment, a file, or a plugin.

The keyring text is always the same, ``<version>:<base64 32 bytes>`` entries separated by
commas or newlines (``KeyRing.parse``). Sources, first match wins:

* ``SECMSG_KEYRING_SOURCE=package.module:function`` -- a plugin: ``function(settings) -> str``
  returns the keyring text. The seam for a secret store: e.g. a keyring file kept encrypted
  under a HashiCorp Vault transit key or a cloud KMS key, decrypted by the plugin at start-up
  (transit ``decrypt``, KMS ``Decrypt``), so the plaintext keyring never rests on disk. No
  such plugin ships (none could be tested against a real Vault/KMS here); docs/operations.md
  ("Key rotation") shows one.
* ``SECMSG_KEYRING_FILE=/run/secmsg/keyring/keyring`` -- a file, e.g. a key of a Kubernetes
  Secret mounted read-only (the manifests do this); the keyring stays out of the process
  environment (``/proc/<pid>/environ``, ``kubectl describe``, crash reports).
* ``SECMSG_KEYRING`` -- the variable itself (compose, the local stack, tests).

A source is read once, at start-up: after changing the keyring, restart the services
(``kubectl rollout restart``) -- see docs/operations.md, "Key rotation".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class KeyringSettings(Protocol):
    """What a source may read (``CommonSettings`` satisfies it)."""

    keyring: str
    keyring_file: Path | None
    keyring_source: str | None


KeyringSource = Callable[[KeyringSettings], str]


class KeyringUnavailable(ValueError):
    """The configured source gave no usable keyring text (the service refuses to start)."""


def load_plugin(ref: str) -> KeyringSource:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise KeyringUnavailable(f"SECMSG_KEYRING_SOURCE {ref!r} is not 'module:function'")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyringUnavailable(f"SECMSG_KEYRING_SOURCE {ref!r} cannot be loaded: {exc}") \
            from None
    if not callable(func):
        raise KeyringUnavailable(f"SECMSG_KEYRING_SOURCE {ref!r} is not callable")
    source: KeyringSource = func
    return source


def read_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyringUnavailable(f"SECMSG_KEYRING_FILE {path}: {exc.__class__.__name__}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    return text


def keyring_text(settings: KeyringSettings) -> str:
    """The keyring text from the configured source (plugin, file, or the variable)."""
    if settings.keyring_source:
        text = load_plugin(settings.keyring_source)(settings)
        origin = f"SECMSG_KEYRING_SOURCE {settings.keyring_source}"
    elif settings.keyring_file is not None:
        text = read_file(settings.keyring_file)
        origin = f"SECMSG_KEYRING_FILE {settings.keyring_file}"
    else:
        return settings.keyring
    if not isinstance(text, str):
        raise KeyringUnavailable(f"{origin} gave no text")
    # one entry per line or comma-separated; lines starting with # are comments
    entries = [part.strip() for line in text.splitlines() if not line.lstrip().startswith("#")
               for part in line.split(",") if part.strip()]
    if not entries:
        raise KeyringUnavailable(f"{origin} gave an empty keyring")
    return ",".join(entries)
