"""MongoDB access shared by the services: the client, collection names, error mapping.

Only MongoDB-wire features that FerretDB 1.x also has are used: no multi-document
transactions, no change streams. Atomicity comes from single-document updates and unique keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError

from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.settings import CommonSettings

# Collections, and the service that writes each (others only read).
TENANTS = "tenants"  # ingest (admin)
API_KEYS = "api_keys"  # ingest (admin)
IDEMPOTENCY = "idempotency_keys"  # ingest
MESSAGES = "messages"  # store
AUDIT = "audit_events"  # store
DEAD_LETTERS = "dead_letters"  # any worker, append-only
DELIVERIES = "deliveries"  # notify (claims and per-recipient state)
LOGIN_CODES = "login_codes"  # retrieve
SESSIONS = "sessions"  # retrieve
RATE_LIMITS = "rate_limits"  # retrieve


def make_client(s: CommonSettings) -> AsyncMongoClient:
    return AsyncMongoClient(
        s.mongo_url,
        serverSelectionTimeoutMS=s.mongo_timeout_ms,
        connectTimeoutMS=s.mongo_timeout_ms,
        socketTimeoutMS=max(s.mongo_timeout_ms * 4, 20000),
        tz_aware=True,
        appname="secmsg",
    )


@asynccontextmanager
async def unavailable_as_503() -> AsyncIterator[None]:
    """Turn 'database unreachable' into ``DependencyUnavailable`` (retry / HTTP 503)."""
    try:
        yield
    except (ServerSelectionTimeoutError, ConnectionFailure, AutoReconnect) as exc:
        raise DependencyUnavailable(f"database unavailable ({type(exc).__name__})") from exc
