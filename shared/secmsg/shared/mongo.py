"""MongoDB access shared by the services: the client, collection names, error mapping.

Only MongoDB-wire features that FerretDB 1.x also has are used: no multi-document
transactions, no change streams.

Atomicity: on MongoDB a conditional single-document update (``find_one_and_update`` with a
filter) is atomic. On FerretDB 1.x (local runs and CI) it is NOT: it reads the matching
documents, then writes them back by ``_id`` without checking the filter again, so two writers
can both "win". Where a race matters, exactly-once decisions are taken by an INSERT with a
unique ``_id`` (e.g. ``purge_claims``, ``delivery_final``), which is atomic on both; notify
keeps its claims in a JetStream key-value bucket with compare-and-set instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError

from secmsg.shared.errors import DependencyUnavailable
from secmsg.shared.settings import CommonSettings

# Collections. Each has exactly one service that writes it; the others read it through a
# typed read-only view (``secmsg.shared.documents``) or learn through events. The table of
# owners is in docs/design.md ("Who owns which collection"), checked by
# tests/shared/test_ownership.py against the source.
TENANTS = "tenants"  # ingest (admin)
API_KEYS = "api_keys"  # ingest (admin)
IDEMPOTENCY = "idempotency_keys"  # ingest
MESSAGES = "messages"  # store
# store: one small entry per (message, recipient) and per (message, sender); ``_id`` =
# ``<tenant>:<box>:<address>:<time-sortable key>`` so a listing page is an ``_id`` range
MAILBOX = "mailbox"
DELIVERY_STATUS = "delivery_status"  # store (sender-visible per-recipient state)
DELIVERY_FINAL = "delivery_final"  # store (insert-only: first final state wins)
PURGE_CLAIMS = "purge_claims"  # store (insert-only purge leases)
EXPIRY_BUCKETS = "expiry_buckets"  # store (message ids due per expiry minute; purge cursor)
AUDIT = "audit_events"  # store
DEAD_LETTERS = "dead_letters"  # store (every worker's dead letters; see docs/design.md)
LOGIN_CODES = "login_codes"  # retrieve
LOGIN_CODES_USED = "login_codes_used"  # retrieve (insert-only: codes already redeemed)
SESSIONS = "sessions"  # retrieve
RATE_LIMITS = "rate_limits"  # retrieve
ACCOUNTS = "accounts"  # retrieve (people: recipients and tenant users, password, TOTP)
TOKENS = "tokens"  # retrieve (toolbar/device, webmail tokens); ingest reads them
DEVICE_CODES = "device_codes"  # retrieve (device authorization flow)
PASSKEYS = "passkeys"  # retrieve (WebAuthn credentials: public keys, never a secret)
ACCESS_MARKERS = "access_markers"  # retrieve (insert-only: used TOTP steps, redeemed devices)
TENANT_USERS = "tenant_users"  # ingest (admin): who at the tenant is a sender or an admin
REVOCATIONS = "revocations"  # ingest (insert-only): revoked / recalled access, read by retrieve
# ingest: when a user token was last used at ingest, read by retrieve
TOKEN_USE = "token_use"  # noqa: S105 - a collection name, not a secret
KEY_ROTATIONS = "key_rotations"  # store (re-wrap job progress); ingest reads it
UNDELIVERABLE = "undeliverable"  # store (hard bounces, per tenant); notify, ingest read
DNSBL_STATUS = "dnsbl_status"  # notify (deliverability monitor); ingest admin + notify read
DNSBL_STATUS_ID = "platform"  # the one document of DNSBL_STATUS: the platform's sending status

COLLECTIONS = (
    TENANTS, API_KEYS, IDEMPOTENCY, MESSAGES, MAILBOX, DELIVERY_STATUS, DELIVERY_FINAL,
    PURGE_CLAIMS, AUDIT, DEAD_LETTERS, LOGIN_CODES, LOGIN_CODES_USED, SESSIONS, RATE_LIMITS,
    ACCOUNTS, TOKENS, DEVICE_CODES, ACCESS_MARKERS, TENANT_USERS, REVOCATIONS, TOKEN_USE,
    KEY_ROTATIONS, UNDELIVERABLE, DNSBL_STATUS, PASSKEYS, EXPIRY_BUCKETS,
)


def make_client(s: CommonSettings) -> AsyncMongoClient[dict[str, Any]]:
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
