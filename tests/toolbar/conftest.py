"""Fixtures for the toolbar tests: retrieve in-process (from tests/retrieve) and a real
dovecot mailbox on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.imap import Dovecot
from tests.retrieve.conftest import app, blobs, make_app, seeder  # noqa: F401 - fixtures

IMAP_USER = "bob@example.org"
IMAP_PASSWORD = "imap-secret-1"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path / "dovecot", {IMAP_USER: IMAP_PASSWORD})
    server.start()
    yield server
    server.stop()
