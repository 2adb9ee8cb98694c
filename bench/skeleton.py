"""secmsg's architecture with nothing of secmsg in it: the floor ``bench.cost`` sets beside
the pipeline's measured cost per message.

Three processes do what the pipeline's must do at the least, over the same servers, with the
same libraries, and nothing else -- no validation, encryption, rendering, exactly-once claims,
audit trail, metrics or logs:

- ``http``: a bare ASGI app (uvicorn, httptools, uvloop, as the services are served) that
  reads the submission, publishes a ``received`` event to JetStream (deduplicated by id,
  waiting for the stream's ack) and answers 202 -- ingest's part.
- ``store``: a pull consumer of ``received`` (batches of up to 16, topped up for 0.1 s) that
  writes the documents one real message left in the database (``--documents``, cloned under
  the event's id; one ``insert_many`` per collection per batch), publishes ``stored`` for
  each and acks; and a pull consumer of ``sent`` (batches of up to 100, 0.1 s) that writes
  the delivery records the same way and acks -- store's part, batched as store batches.
- ``notify``: a pull consumer of ``stored`` (up to 16 events at once) that sends one captured
  notification (``--mail``, the same bytes each time) through a pool of 4 kept SMTP
  connections with aiosmtplib, publishes ``sent`` and acks -- notify's part.

Events are ~600 bytes of JSON on the stream ``SKELETON`` (created by ``bench.cost``).

    python -m bench.skeleton http --port 8099
    python -m bench.skeleton store --documents docs.bson
    python -m bench.skeleton notify --mail one.eml --smtp-port 2525
    python -m bench.skeleton bare --port 8099    # the HTTP part alone, publishing nothing

NATS and MongoDB from ``SECMSG_NATS_URL``, ``SECMSG_MONGO_URL``, ``SECMSG_MONGO_DB``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import bson
import nats
import uvicorn
import uvloop
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient

STREAM = "SKELETON"
SUBJECTS = ("skeleton.received", "skeleton.stored", "skeleton.sent")
PAD = "x" * 500  # the events' size: about 600 bytes, as secmsg's small ones


def event(message_id: str) -> bytes:
    return json.dumps({"message_id": message_id, "tenant_id": "bench", "pad": PAD}).encode()


async def connect() -> tuple[Any, JetStreamContext]:
    nc = await nats.connect(os.environ["SECMSG_NATS_URL"].split(",")[0])
    return nc, nc.jetstream()


async def consume(js: JetStreamContext, subject: str, durable: str, handle: Any, *,
                  batch: int, wait_s: float) -> None:
    """Hand batches from ``durable`` to ``handle`` (which acks), forever: the first event
    long-polled, then the batch topped up for at most ``wait_s`` (as store's consumers do)."""
    sub = await js.pull_subscribe(subject, durable=durable, stream=STREAM)
    while True:
        try:
            msgs = await sub.fetch(1, timeout=5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        deadline = time.monotonic() + wait_s
        while len(msgs) < batch and (left := deadline - time.monotonic()) > 0:
            try:
                msgs += await sub.fetch(batch - len(msgs), timeout=left)
            except (TimeoutError, nats.errors.TimeoutError):
                break
        await handle(msgs)


async def serve(port: int, publish: Any = None) -> None:
    """The HTTP part: read the whole submission, ``publish(message_id)`` if given (the
    ``http`` role; the ``bare`` role, ``bench.cost``'s HTTP floor, publishes nothing), answer
    202 with the id. Served as the services are (uvicorn, httptools, uvloop, no access log)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        mid = uuid.uuid4().hex
        if publish is not None:
            await publish(mid)
        body = b'{"message_id":"' + mid.encode() + b'"}'
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", lifespan="off",
                            access_log=False, log_config=None, server_header=False)
    await uvicorn.Server(config).serve()


async def http(port: int) -> None:
    nc, js = await connect()

    async def publish(mid: str) -> None:
        await js.publish(SUBJECTS[0], event(mid), headers={"Nats-Msg-Id": mid})

    await serve(port, publish)
    await nc.close()


async def store(raw: bytes) -> None:
    # The delivery records are written when ``sent`` arrives, the rest when ``received`` does,
    # as store writes them (inserts: an update by ``_id`` is a scan on FerretDB/SQLite).
    at_received: dict[str, list[bytes]] = {}
    at_sent: dict[str, list[bytes]] = {}
    template_id = b""
    for doc in bson.decode_all(raw):
        template_id = doc["template_id"].encode()
        name = doc["collection"]
        (at_sent if name.startswith("delivery") else at_received).setdefault(name, []).append(
            bson.encode(doc["document"]))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(os.environ["SECMSG_MONGO_URL"])
    db = client[os.environ["SECMSG_MONGO_DB"]]
    _, js = await connect()

    async def write(templates: dict[str, list[bytes]], msgs: list[Any]) -> list[bytes]:
        ids = [json.loads(m.data)["message_id"].encode() for m in msgs]
        for name, raws in templates.items():
            await db[name].insert_many([bson.decode(r.replace(template_id, mid))
                                        for mid in ids for r in raws], ordered=False)
        return ids

    async def received(msgs: list[Any]) -> None:
        ids = await write(at_received, msgs)
        await asyncio.gather(*(js.publish(SUBJECTS[1], event(mid.decode()),
                                          headers={"Nats-Msg-Id": "stored-" + mid.decode()})
                               for mid in ids))
        for m in msgs:
            await m.ack()

    async def sent(msgs: list[Any]) -> None:
        await write(at_sent, msgs)
        for m in msgs:
            await m.ack()

    await asyncio.gather(
        consume(js, SUBJECTS[0], "skeleton-store-received", received, batch=16, wait_s=0.1),
        consume(js, SUBJECTS[2], "skeleton-store-sent", sent, batch=100, wait_s=0.1))


async def notify(data: bytes, smtp_port: int) -> None:
    import aiosmtplib

    pool: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for _ in range(4):
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port)
        await smtp.connect()
        pool.put_nowait(smtp)
    _, js = await connect()

    async def one(m: Any) -> None:
        try:
            mid = json.loads(m.data)["message_id"]
            smtp = await pool.get()
            try:
                await smtp.sendmail("bounce@bench.example", ["skeleton@example.org"], data)
            finally:
                pool.put_nowait(smtp)
            await js.publish(SUBJECTS[2], event(mid), headers={"Nats-Msg-Id": "sent-" + mid})
            await m.ack()
        finally:
            slots.release()

    # Each event handled as soon as it is fetched, up to 16 at once (notify's concurrency).
    slots = asyncio.Semaphore(16)
    running: set[asyncio.Task[None]] = set()
    sub = await js.pull_subscribe(SUBJECTS[1], durable="skeleton-notify", stream=STREAM)
    while True:
        await slots.acquire()
        try:
            msgs = await sub.fetch(1, timeout=5)
        except (TimeoutError, nats.errors.TimeoutError):
            slots.release()
            continue
        task = asyncio.create_task(one(msgs[0]))
        running.add(task)
        task.add_done_callback(running.discard)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["http", "store", "notify", "bare"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--documents", type=Path)
    ap.add_argument("--mail", type=Path)
    ap.add_argument("--smtp-port", type=int, default=0)
    args = ap.parse_args()
    if args.role == "http":
        uvloop.run(http(args.port))
    elif args.role == "bare":
        uvloop.run(serve(args.port))
    elif args.role == "store":
        uvloop.run(store(args.documents.read_bytes()))
    else:
        uvloop.run(notify(args.mail.read_bytes(), args.smtp_port))


if __name__ == "__main__":
    main()
