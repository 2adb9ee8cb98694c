"""message.stored with notify=False (the sender's own server delivered the placeholder of an
RFC 5322 submission): notify sends nothing for it and carries on with the next event."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.smtp_sink import Sink
from secmsg.notify import service
from tests.notify.conftest import Bus, eventually, stored_event

pytestmark = pytest.mark.timeout(60)


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"notify_recipients used {name} for a notify=false event")


async def test_notify_false_touches_nothing() -> None:
    ev = stored_event(to=["bob@example.org"]).model_copy(update={"notify": False})
    u: Any = _Untouchable()
    await service.notify_recipients(event=ev, deliveries=u, mailer=u, tenants=u, publisher=u,
                                    target=u, policy=u, platform_from="x@example.org",
                                    public_url="https://example.org")


async def test_notify_false_event_sends_no_mail(tenant: str, sink: Sink, nbus: Bus,
                                                start_notify: Any) -> None:
    await start_notify()
    quiet = stored_event(to=["quiet@example.org"]).model_copy(update={"notify": False})
    loud = stored_event(to=["loud@example.org"])
    await nbus.publish(quiet)
    await nbus.publish(loud)
    await eventually(lambda: sink.handler.for_recipient("loud@example.org"),
                     what="the normal event's mail")
    sent = await eventually(lambda: nbus.events("notification.sent"), what="sent event")
    assert [e.message_id for e in sent] == [loud.message_id]
    assert not sink.handler.for_recipient("quiet@example.org")
    assert len(sink.messages) == 1
