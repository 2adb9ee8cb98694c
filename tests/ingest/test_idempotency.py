"""Idempotency-Key: replays answer with the same id and create nothing; a live attempt is a
409; a crashed attempt's stale claim is taken over with the same id and fresh objects."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import nats

from secmsg.ingest.app import create_app
from secmsg.ingest.settings import IngestSettings
from secmsg.shared import bus
from secmsg.shared.events import MessageReceived, event_msg_id
from tests.ingest.conftest import BOUNDARY, TENANT, Ingest, att, env_part, envelope, multipart

PARTS = [env_part(envelope()), att("a.bin", b"a" * 3000), att("b.bin", b"b" * 10)]


async def test_same_key_twice_gives_one_message(ingest: Ingest) -> None:
    r1 = await ingest.post(PARTS, **{"Idempotency-Key": "order-4711"})
    keys_after_first = sorted(await ingest.keys())
    r2 = await ingest.post(PARTS, **{"Idempotency-Key": "order-4711"})
    assert r1.status_code == r2.status_code == 202, (r1.text, r2.text)
    assert r1.json()["message_id"] == r2.json()["message_id"]
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert sorted(await ingest.keys()) == keys_after_first
    assert len(keys_after_first) == 3  # text body + two attachments
    assert len(await ingest.events()) == 1
    doc = await ingest.db["idempotency_keys"].find_one({"_id": f"{TENANT}:order-4711"})
    assert doc["state"] == "done" and doc["message_id"] == r1.json()["message_id"]

    # Another key is another message.
    r3 = await ingest.post(PARTS, **{"Idempotency-Key": "order-4712"})
    assert r3.status_code == 202 and r3.json()["message_id"] != r1.json()["message_id"]
    assert len(await ingest.events()) == 2


async def test_pending_key_in_progress_is_409(ingest: Ingest) -> None:
    now = datetime.now(UTC)
    await ingest.db["idempotency_keys"].insert_one({
        "_id": f"{TENANT}:busy", "message_id": uuid.uuid4().hex, "state": "pending",
        "attempt": "other", "heartbeat_at": now, "created_at": now})
    r = await ingest.post(PARTS, **{"Idempotency-Key": "busy"})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "conflict"
    await ingest.assert_nothing_stored()


async def test_stale_claim_is_taken_over_with_same_id_and_new_objects(ingest: Ingest) -> None:
    old = datetime.now(UTC) - timedelta(minutes=10)
    mid = uuid.uuid4().hex
    # The crashed attempt left an object behind: it must never be overwritten.
    crashed_key = f"t/{TENANT}/m/{mid}/{uuid.uuid4().hex}"
    await ingest.blobs.put_bytes(crashed_key, b"crashed attempt's ciphertext")
    await ingest.db["idempotency_keys"].insert_one({
        "_id": f"{TENANT}:crashed", "message_id": mid, "state": "pending", "attempt": "dead",
        "heartbeat_at": old, "created_at": old})
    r = await ingest.post(PARTS, **{"Idempotency-Key": "crashed"})
    assert r.status_code == 202, r.text
    assert r.json()["message_id"] == mid
    (ev,) = await ingest.events()
    assert ev.message_id == mid
    assert crashed_key not in {o.key for o in ev.objects}
    assert await ingest.blobs.get_bytes(crashed_key) == b"crashed attempt's ciphertext"
    doc = await ingest.db["idempotency_keys"].find_one({"_id": f"{TENANT}:crashed"})
    assert doc["state"] == "done"


async def test_takeover_after_a_publish_that_was_not_recorded(ingest: Ingest) -> None:
    """The crashed attempt published and died before marking done: the takeover's publish is
    dropped as a duplicate, and its own surplus objects are removed."""
    old = datetime.now(UTC) - timedelta(minutes=10)
    mid = uuid.uuid4().hex
    earlier = MessageReceived(tenant_id=TENANT, message_id=mid, sender="alice@acme.example",
                              recipients=[], subject="s", objects=[], submitted_by="api_key:x")
    nc = await nats.connect(ingest.settings.nats_url)
    await bus.ensure_stream(nc)
    assert await bus.EventPublisher(nc).publish(earlier, event_msg_id(earlier))
    await nc.close()
    await ingest.db["idempotency_keys"].insert_one({
        "_id": f"{TENANT}:half", "message_id": mid, "state": "pending", "attempt": "dead",
        "heartbeat_at": old, "created_at": old})
    r = await ingest.post(PARTS, **{"Idempotency-Key": "half"})
    assert r.status_code == 202 and r.json()["message_id"] == mid
    assert [e.message_id for e in await ingest.events()] == [mid]
    assert await ingest.keys() == []


async def test_refused_attempt_can_be_retried_with_the_same_key(ingest: Ingest) -> None:
    bad = [env_part(envelope(to=["nope"]))]
    r1 = await ingest.post(bad, **{"Idempotency-Key": "fix-me"})
    assert r1.status_code == 400
    r2 = await ingest.post(PARTS, **{"Idempotency-Key": "fix-me"})
    assert r2.status_code == 202, r2.text
    assert len(await ingest.events()) == 1


async def test_long_upload_keeps_its_claim_alive_and_a_concurrent_retry_gets_409(
        ingest: Ingest) -> None:
    doc_id = f"{TENANT}:slow"
    col = ingest.db["idempotency_keys"]
    head = multipart([env_part(envelope())], close=False)
    head += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"attachment\"; "
             f"filename=\"slow.bin\"\r\n\r\n").encode()
    first_beat: list[object] = []
    checks_done = asyncio.Event()

    async def slow_body():  # type: ignore[no-untyped-def]
        yield head + b"s" * 2000
        first = await col.find_one({"_id": doc_id})
        first_beat.append(first["heartbeat_at"])
        # Hold the upload open until the heartbeat has moved and the retry was refused.
        for _ in range(300):
            doc = await col.find_one({"_id": doc_id})
            if doc["heartbeat_at"] != first["heartbeat_at"] and checks_done.is_set():
                break
            await asyncio.sleep(0.05)
        yield b"s" * 2000 + f"\r\n--{BOUNDARY}--\r\n".encode()

    app = create_app(cfg=IngestSettings(idempotency_heartbeat_s=0.2))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest.test") as client:
        headers = {**ingest.headers(), "Idempotency-Key": "slow"}
        slow = asyncio.create_task(client.post("/v1/messages", content=slow_body(),
                                               headers=headers))
        while not first_beat:
            await asyncio.sleep(0.02)
        retry = await client.post("/v1/messages", content=multipart([env_part(envelope())]),
                                  headers=headers)
        assert retry.status_code == 409, retry.text
        checks_done.set()
        r = await slow
    assert r.status_code == 202, r.text
    doc = await col.find_one({"_id": doc_id})
    assert doc["state"] == "done" and doc["heartbeat_at"] != first_beat[0]
    (ev,) = await ingest.events()
    assert ev.message_id == r.json()["message_id"]
    assert [o.size for o in ev.objects if o.role == "attachment"] == [4000]
