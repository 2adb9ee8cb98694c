"""The bus is closed: no credentials, no connection; each service's NATS user can publish and
subscribe only where ``secmsg.shared.bus_users`` allows, while its real work still flows.

The test NATS (``nats_server``) is configured exactly like the local stack's (devstack), and the
``services`` fixture starts every service as its own user, so the end-to-end flow below runs
under the same permissions as production.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from nats.js.errors import NotFoundError

from devstack.servers import NatsServer
from secmsg.shared import bus, subjects
from secmsg.shared.bus_users import ADMIN, BY_SERVICE
from tests.e2e.helpers import Platform, eventually, submit


async def _connect(server: NatsServer, user: str | None, password: str | None = None,
                   errors: list[str] | None = None) -> NATS:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs = {"user": user, "password": password or server.passwords[user],
                  "inbox_prefix": bus.inbox_prefix(user)}
    nc = NATS()
    try:
        await nc.connect(server.url(), allow_reconnect=False, connect_timeout=2,
                         max_reconnect_attempts=0, error_cb=on_error, **kwargs)
    except Exception:
        await nc.close()  # nats.py leaves the refused socket open
        raise
    return nc


@pytest.mark.parametrize(("user", "password"),
                         [(None, None), ("notify", "not-the-password"), ("nobody", "x")])
async def test_connecting_without_valid_credentials_is_refused(
        nats_server: NatsServer, user: str | None, password: str | None) -> None:
    with pytest.raises((NoServersError, nats.errors.Error)):
        nc = await _connect(nats_server, user, password)
        await nc.close()
    # refused by the server for its credentials, not for being unreachable
    assert "authentication error" in nats_server.log_path.read_text()


async def _violations(errors: list[str], what: str) -> list[str]:
    await eventually(lambda: [e for e in errors if what.lower() in e.lower()], timeout=5,
                     what=f"a permissions violation for {what}")
    return errors


async def test_service_users_are_limited_to_their_subjects(
        platform: Platform, nats_server: NatsServer) -> None:
    # The real work flows under the services' own users: submit -> store -> notify -> SMTP,
    # and notify's notification.sent is consumed by store (delivery state recorded).
    message_id = await submit(platform, sender="alice@acme.example", to=["bob@example.org"],
                              subject="Permissions", text="hello")
    await eventually(lambda: platform.sink.handler.for_recipient("bob@example.org"),
                     timeout=60, what="the notification")

    async def sent_recorded() -> Any:
        from secmsg.shared import mongo
        return await platform.db[mongo.DELIVERY_STATUS].find_one(
            {"message_id": message_id, "state": "sent"})
    await eventually(sent_recorded, timeout=30, what="store recording notification.sent")

    errors: list[str] = []
    nc = await _connect(nats_server, BY_SERVICE["notify"].name, errors=errors)
    try:
        js = nc.jetstream(timeout=1)
        # notify may publish notifications, not message.stored (only store may).
        forged = subjects.subject("evil", subjects.MESSAGE_STORED)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await js.publish(forged, b"{}", stream=subjects.STREAM)
        await _violations(errors, f"publish to \"{forged}\"")
        # nor read the audit trail, nor store's inbox (pull deliveries travel on it)
        for subj in (subjects.any_tenant("audit.>"), "_INBOX.store.>", "_INBOX.>"):
            await nc.subscribe(subj)
            await _violations(errors, f"subscription to \"{subj}\"")
        # nor open a consumer of its own on the stream, nor delete it
        for api in (f"$JS.API.CONSUMER.CREATE.{subjects.STREAM}.snoop",
                    f"$JS.API.STREAM.DELETE.{subjects.STREAM}"):
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await nc.request(api, b"{}", timeout=1)
            await _violations(errors, f"publish to \"{api}\"")
        # what it needs is allowed: its own durable's state, its own subjects
        info = await js.consumer_info(subjects.STREAM, subjects.NOTIFY_STORED)
        assert info.num_pending == 0
    finally:
        await nc.close()

    # ingest may not forge what notify or store say; retrieve may not submit messages.
    for service, suffix in (("ingest", subjects.NOTIFICATION_SENT),
                            ("ingest", subjects.MESSAGE_STORED),
                            ("retrieve", subjects.MESSAGE_RECEIVED),
                            ("notify.deliverability", subjects.MESSAGE_RECALLED)):
        errors = []
        nc = await _connect(nats_server, BY_SERVICE[service].name, errors=errors)
        try:
            subj = subjects.subject("evil", suffix)
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await nc.jetstream(timeout=1).publish(subj, b"{}", stream=subjects.STREAM)
            await _violations(errors, f"publish to \"{subj}\"")
        finally:
            await nc.close()

    # None of the forged events reached the stream.
    admin = await _connect(nats_server, ADMIN)
    try:
        js = admin.jetstream()
        for suffix in (subjects.MESSAGE_STORED, subjects.NOTIFICATION_SENT,
                       subjects.MESSAGE_RECEIVED, subjects.MESSAGE_RECALLED):
            with pytest.raises(NotFoundError):
                await js.get_last_msg(subjects.STREAM, subjects.subject("evil", suffix))
    finally:
        await admin.close()
    await asyncio.sleep(0)


def test_a_stream_of_its_own_gets_its_api_subjects_and_durables() -> None:
    from secmsg.shared.bus_users import BusUser, OwnStream

    u = BusUser("svc", "svc", publishes=(), own_streams=(
        OwnStream("WORK", publishes=("work.>",), consumers=("svc-work",)),))
    allow = u.publish_allow()
    assert {"work.>", "$JS.API.STREAM.CREATE.WORK", "$JS.API.CONSUMER.MSG.NEXT.WORK.svc-work",
            "$JS.ACK.WORK.svc-work.>"} <= set(allow)
    assert not [a for a in allow if "DELETE" in a or "PURGE" in a]
    assert u.subscribe_allow() == ["_INBOX.svc.>"]
