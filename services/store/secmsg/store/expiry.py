"""Expiry buckets: which minute a message's purge is filed under (pure functions).

The expiry purge never searches ``messages``: store files each message's id under the minute
it expires in (``expiry_buckets``, ``_id`` ``expiry:<UTC minute>``) when it records it or
changes its expiry, and the purge reads the buckets of the minutes that have come, by exact
``_id`` (docs/cost.md, "The periodic jobs"). A minute already past when the id is filed is
never read again, so an expiry in the past is filed under the current minute.
"""

from __future__ import annotations

from datetime import UTC, datetime

CURSOR_ID = "expiry:cursor"


def aware(at: datetime) -> datetime:
    """UTC, tz-aware (a driver without ``tz_aware`` hands back naive UTC datetimes)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def minute_of(at: datetime) -> datetime:
    return aware(at).replace(second=0, microsecond=0)


def bucket_minute(expires_at: datetime, *, now: datetime) -> datetime:
    """The minute a message expiring at ``expires_at`` is filed under when filed at ``now``:
    its own minute, or the current one if that is already past."""
    return max(minute_of(expires_at), minute_of(now))


def bucket_id(minute: datetime) -> str:
    return f"expiry:{minute_of(minute):%Y-%m-%dT%H:%M}"
