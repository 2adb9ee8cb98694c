"""The webmail runs inside retrieve: reuse retrieve's in-process app and seeding fixtures.
Browser tests share one Chromium for the whole session (``browser`` in tests/conftest.py; a
fresh context per person)."""

from tests.retrieve.conftest import app, blobs, make_app, seeder  # noqa: F401
