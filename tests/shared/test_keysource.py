"""The keyring's sources (shared/keysource.py): a plugin, a file (a mounted Kubernetes
Secret), or SECMSG_KEYRING; read through CommonSettings as the services do. The services
started with a keyring file only are in tests/deploy/test_backup_restore.py."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from secmsg.shared.crypto import KeyRing
from secmsg.shared.settings import CommonSettings
from tests.shared import keyring_plugin

K1, K2 = KeyRing.generate_spec(1), KeyRing.generate_spec(2)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECMSG_KEYRING", "SECMSG_KEYRING_FILE", "SECMSG_KEYRING_SOURCE",
                 "SECMSG_KEYRING_ACTIVE", "SECMSG_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def test_a_file_with_one_version_per_line_is_the_keyring(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keyring"
    f.write_text(f"# rotated 2026-12-01, version 2 active\n{K1}\n{K2}\n")
    monkeypatch.setenv("SECMSG_KEYRING_FILE", str(f))
    monkeypatch.setenv("SECMSG_KEYRING", KeyRing.generate_spec(9))  # the file wins
    ring = CommonSettings().key_ring
    assert ring.active == 2
    wrapped = ring.wrap("t", "o", b"k" * 32)
    assert KeyRing.parse(f"{K1},{K2}").unwrap("t", "o", wrapped) == b"k" * 32
    old = KeyRing.parse(K1).wrap("t", "o", b"o" * 32)
    assert ring.unwrap("t", "o", old) == b"o" * 32  # old versions still open


def test_comma_separated_file_and_an_explicit_active_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keyring"
    f.write_text(f"{K1},{K2}")  # no trailing newline, as `kubectl create secret` writes it
    monkeypatch.setenv("SECMSG_KEYRING_FILE", str(f))
    monkeypatch.setenv("SECMSG_KEYRING_ACTIVE", "1")
    assert CommonSettings().key_ring.active == 1


@pytest.mark.parametrize(("content", "reason"), [
    (None, "FileNotFoundError"),
    ("", "empty keyring"),
    ("\n# nothing\n", "empty keyring"),
    ("1:not-base64!", "not '<int>:<base64>'"),
    (b"\xff\xfe", "UnicodeDecodeError"),
])
def test_a_bad_file_is_refused_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             content: str | bytes | None, reason: str) -> None:
    f = tmp_path / "keyring"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    monkeypatch.setenv("SECMSG_KEYRING_FILE", str(f))
    with pytest.raises(ValueError, match=reason):
        CommonSettings().key_ring  # noqa: B018 - reading it is the test


def test_production_refuses_the_development_keyring_from_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keyring"
    f.write_text(CommonSettings().keyring + "\n")  # the built-in development keyring
    monkeypatch.setenv("SECMSG_KEYRING_FILE", str(f))
    monkeypatch.setenv("SECMSG_ENVIRONMENT", "production")
    monkeypatch.setenv("SECMSG_NATS_USER", "store")
    monkeypatch.setenv("SECMSG_NATS_PASSWORD", "x")
    monkeypatch.setenv("SECMSG_S3_SECRET_KEY", "real")
    with pytest.raises(ValueError, match="real keyring in production"):
        CommonSettings().key_ring  # noqa: B018


def test_a_plugin_source_is_asked_and_wins(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keyring"
    f.write_text(K1)
    monkeypatch.setenv("SECMSG_KEYRING_FILE", str(f))
    monkeypatch.setenv("SECMSG_KEYRING_SOURCE", "tests.shared.keyring_plugin:from_store")
    keyring_plugin.CALLS.clear()
    ring = CommonSettings().key_ring
    assert ring.active == 7 and len(keyring_plugin.CALLS) == 1
    wrapped = ring.wrap("t", "o", b"x" * 32)
    assert KeyRing({7: base64.b64decode(keyring_plugin.KEY_7)}).unwrap("t", "o", wrapped)


@pytest.mark.parametrize(("ref", "reason"), [
    ("tests.shared.keyring_plugin", "not 'module:function'"),
    ("tests.shared.no_such_module:f", "cannot be loaded"),
    ("tests.shared.keyring_plugin:missing", "cannot be loaded"),
    ("tests.shared.keyring_plugin:NOT_CALLABLE", "not callable"),
    ("tests.shared.keyring_plugin:empty", "empty keyring"),
])
def test_a_bad_plugin_is_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch, ref: str,
                                               reason: str) -> None:
    monkeypatch.setenv("SECMSG_KEYRING_SOURCE", ref)
    with pytest.raises(ValueError, match=reason):
        CommonSettings().key_ring  # noqa: B018


def test_without_a_source_the_variable_is_the_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECMSG_KEYRING", f"{K1},{K2}")
    assert CommonSettings().key_ring.active == 2
