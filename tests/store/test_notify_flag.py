"""MessageReceived.notify=False (an RFC 5322 submission whose placeholder the sender's own
server delivers) is recorded and carried into message.stored; the default stays True."""

from __future__ import annotations

from typing import Any

from faststream.asgi import AsgiFastStream
from nats.aio.client import Client as NATS

from secmsg.shared import bus, mongo
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings
from secmsg.store import service
from tests.store.helpers import publish_received, stage_message, stored_events, wait_for


async def test_notify_flag_is_recorded_and_copied_into_message_stored(
        store_app: AsgiFastStream, settings: CommonSettings, blobs: S3BlobStore,
        publisher: bus.EventPublisher, nc: NATS, mongo_db: Any) -> None:
    quiet = (await stage_message(blobs, settings)).model_copy(update={"notify": False})
    await publish_received(publisher, quiet)

    doc = await wait_for(lambda: mongo_db[mongo.MESSAGES].find_one({"_id": quiet.message_id}))
    assert doc["notify"] is False
    stored = await wait_for(lambda: stored_events(nc))
    assert [(e.message_id, e.notify) for e in stored] == [(quiet.message_id, False)]
    # A document written before the flag existed announces a normal notification.
    del doc["notify"]
    assert service.stored_event(doc).notify is True
