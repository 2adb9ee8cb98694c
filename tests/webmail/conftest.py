"""The webmail runs inside retrieve: reuse retrieve's in-process app and seeding fixtures."""

from tests.retrieve.conftest import app, blobs, make_app, seeder  # noqa: F401
