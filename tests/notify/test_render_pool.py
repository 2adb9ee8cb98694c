"""Tenant templates render off the event loop, in turn per tenant: one tenant's slow (legal)
template delays another tenant's notification by about one render, not by its whole queue."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.shared import mongo, templating
from tests.notify.conftest import DISCLAIMER, FOOTER, Bus, eventually, stored_event

pytestmark = pytest.mark.timeout(120)

LIMIT_S = 0.3  # the lowered render limit these tests run notify with


def _blocking(seconds: float, log: list[str], name: str) -> str:
    time.sleep(seconds)  # a render holding its thread, as a CPU-bound template does
    log.append(name)
    return name


async def test_pool_runs_tenants_side_by_side_and_keeps_the_loop_free() -> None:
    pool = templating.RenderPool(workers=2, per_tenant=1)
    done: list[str] = []
    try:
        slow = [asyncio.create_task(pool.run("slowco", _blocking, 0.2, done, f"slow{i}"))
                for i in range(6)]
        await asyncio.sleep(0.05)  # the slow tenant's queue is formed
        ticks = 0
        quick = asyncio.create_task(pool.run("acme", _blocking, 0.0, done, "quick"))
        while not quick.done():
            ticks += 1  # the loop keeps running while the slow renders hold their thread
            await asyncio.sleep(0.01)
        await asyncio.gather(*slow)
    finally:
        pool.close()
    # acme's render went before all but (at most) the slow one already running
    assert done.index("quick") <= 1, done
    assert ticks >= 1
    assert [n for n in done if n != "quick"] == [f"slow{i}" for i in range(6)]  # in turn


async def test_pool_refuses_a_queue_beyond_max_waiting() -> None:
    pool = templating.RenderPool(workers=2, per_tenant=1, max_waiting=1)
    gate = threading.Event()
    try:
        first = asyncio.create_task(pool.run("slowco", gate.wait, 5))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(pool.run("slowco", gate.wait, 5))  # waits its turn
        await asyncio.sleep(0.05)
        with pytest.raises(templating.RenderBusy) as busy:
            await pool.run("slowco", gate.wait, 5)
        assert busy.value.retry_in > 0
        assert await pool.run("acme", lambda: "other tenants are not affected") \
            == "other tenants are not affected"
        gate.set()
        assert await first and await second
    finally:
        gate.set()
        pool.close()


def _slow_template(target_s: float) -> str:
    """A legal template that spends about ``target_s`` of CPU (calibrated on this machine, in
    this thread's CPU time: the clock the render limit counts in, so the machine's load at
    calibration or at send time does not move the template across the limit)."""
    probe = "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
    checked = templating.compile_checked("notification_text", probe + "{{ link }}")
    ctx = templating.sample_context("notification_text")
    started = time.thread_time()
    templating.render_limited(checked, ctx, limits=templating.Limits(render_timeout_s=60))
    per_inner = (time.thread_time() - started) / 300
    outer = max(1, int(target_s / per_inner))
    source = (f"{{% for i in range({outer}) %}}{{% for j in range(300) %}}{{% endfor %}}"
              "{% endfor %}Open: {{ link }}\n")
    templating.validate("notification_text", source)  # what ingest would have stored
    return source


async def test_a_slow_tenant_template_does_not_hold_up_another_tenant(
        mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    now = datetime.now(UTC)
    source = _slow_template(LIMIT_S * 0.6)
    await mongo_db[mongo.TENANTS].insert_many([
        {"_id": "slowco", "name": "slowco", "display_name": "Slow Co", "created_at": now,
         "templates": {"notification_text": {"source": source, "version": 1,
                                             "updated_at": now}}},
        {"_id": "acme", "name": "acme", "display_name": "Acme Medical", "created_at": now,
         "footer": FOOTER, "disclaimers": [DISCLAIMER]}])
    await start_notify(SECMSG_NOTIFY_TEMPLATE_TIMEOUT_S=str(LIMIT_S))
    slow = [stored_event(to=[f"s{i}@example.org"], tenant="slowco") for i in range(30)]
    for ev in slow:
        await nbus.publish(ev)

    def slow_sent() -> int:
        return sum(1 for m in list(sink.messages) if m.rcpt_tos[0].startswith("s"))

    await eventually(slow_sent, timeout=60, what="the slow tenant's first notification")
    quick = stored_event(to=["bob@example.org"])
    submitted = time.time()
    await nbus.publish(quick)
    [cap] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"),
                             timeout=60, what="the other tenant's notification")
    ahead = slow_sent()
    print(f"\n[render pool] other tenant's notification {cap.received_at - submitted:.2f}s "
          f"after submission; the slow tenant had {ahead}/30 sent by then")
    # On the event loop, the other tenant waited for the slow tenant's whole queue (16+
    # renders); off the loop, in turn per tenant, for about one.
    assert ahead <= 10, f"{ahead} slow renders went first"
    await eventually(lambda: slow_sent() == 30, timeout=90,
                     what="the slow tenant's notifications, all of them")
    text = next(m for m in sink.messages if m.rcpt_tos[0] == "s0@example.org").message
    assert "Open: https://" in text.get_body(("plain",)).get_content()  # its template, in time
