"""A positive signal that published events have been handled: the durable consumers' own
counts, instead of sleeping "long enough" for something that should not happen.

A JetStream consumer acknowledges (or terminates) a message only after its handler returned,
and a handler's effects (a notification sent, its claim recorded, its next event published)
happen before that. So once a consumer has no message left to hand out (``num_pending``) and
none handed out unacknowledged (``num_ack_pending``, which also holds the ones nak'ed with a
delay, i.e. waiting for a retry), nothing it was given can still produce an effect: whatever
was going to happen has happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from nats.js.errors import NotFoundError

from secmsg.notify import retry
from secmsg.shared import bus, subjects
from secmsg.shared.settings import CommonSettings

# The consumers whose handlers send notifications: the hot one and the retry queue.
NOTIFY_CONSUMERS = ((subjects.STREAM, subjects.NOTIFY_STORED), (retry.STREAM, retry.CONSUMER))


async def settled(nc: Any, consumers: Iterable[tuple[str, str]] = NOTIFY_CONSUMERS) -> bool:
    """True when every ``(stream, durable)`` consumer has handed out every message it matches
    and has each one acknowledged or terminated (a consumer not created yet: False)."""
    js = nc.jetstream(timeout=5)
    for stream, durable in consumers:
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError:
            return False
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def wait_settled(consumers: Iterable[tuple[str, str]] = NOTIFY_CONSUMERS, *,
                       timeout: float = 60.0) -> None:
    """Wait until ``settled``, on a connection of its own to this test's NATS
    (``SECMSG_NATS_URL``, as the test's services see it)."""
    wanted = list(consumers)
    s = CommonSettings()
    nc = await bus.connect(s.nats_url, "tests-settled", **bus.connect_options(s))
    try:
        deadline = time.monotonic() + timeout
        while not await settled(nc, wanted):
            if time.monotonic() > deadline:
                raise AssertionError(f"consumers {wanted} still busy after {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
