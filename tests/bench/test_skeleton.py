"""bench.skeleton -- the architecture with nothing of secmsg in it, bench.cost's floor --
does the work it stands for (real NATS, FerretDB and SMTP sink): every submission answered
202, its documents written under its own id, its notification at the sink, its delivery
records written, and nothing left in the consumers. A floor that quietly did less would make
secmsg look dearer than it is."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import httpx
import nats
import pytest

from devstack.servers import NatsServer, free_port, wait_port
from devstack.smtp_sink import Sink

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = uuid.uuid4().hex


@pytest.fixture
def skeleton(env: dict[str, str], sink: Sink, tmp_path: Path) -> Iterator[int]:
    docs = tmp_path / "documents.bson"
    docs.write_bytes(b"".join(bson.encode({"collection": c, "template_id": TEMPLATE,
                                           "document": d}) for c, d in (
        ("messages", {"_id": TEMPLATE, "subject": "s", "tenant_id": "t"}),
        ("mailbox", {"_id": f"t:in:x@example.org:{TEMPLATE}", "message_id": TEMPLATE}),
        ("delivery_status", {"_id": f"{TEMPLATE}:x@example.org", "state": "sent"}))))
    mail = tmp_path / "notification.eml"
    mail.write_bytes(b"From: a@example.org\r\nTo: x@example.org\r\nSubject: n\r\n\r\nhello\r\n")
    port = free_port()
    argvs = [["http", "--port", str(port)], ["store", "--documents", str(docs)],
             ["notify", "--mail", str(mail), "--smtp-port", str(sink.port)]]

    async def stream() -> None:
        nc = await nats.connect(env["SECMSG_NATS_URL"])
        await nc.jetstream().add_stream(name="SKELETON", subjects=["skeleton.>"])
        await nc.close()

    asyncio.run(stream())
    logs = [(tmp_path / f"{a[0]}.log").open("wb") for a in argvs]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.skeleton", *a], cwd=ROOT,
                              env=dict(os.environ), stderr=log)
             for a, log in zip(argvs, logs, strict=True)]
    try:
        wait_port(port, proc=procs[0])
        yield port
        for a, p in zip(argvs, procs, strict=True):  # none died along the way
            assert p.poll() is None, (tmp_path / f"{a[0]}.log").read_text()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        for log in logs:
            log.close()


async def test_the_skeleton_does_the_work_it_stands_for(
        skeleton: int, sink: Sink, env: dict[str, str], mongo_db: Any,
        nats_server: NatsServer) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        replies = [await http.post(f"http://127.0.0.1:{skeleton}/v1/messages",
                                   files=[("envelope", (None, b"{}", "application/json"))])
                   for _ in range(5)]
    assert [r.status_code for r in replies] == [202] * 5
    ids = [r.json()["message_id"] for r in replies]
    assert len(set(ids)) == 5 and TEMPLATE not in ids

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = await mongo_db["delivery_status"].count_documents({})
        if len(sink.messages) >= 5 and statuses >= 5:
            break
        await asyncio.sleep(0.1)
    assert len(sink.messages) == 5
    assert [m.rcpt_tos for m in sink.messages] == [["skeleton@example.org"]] * 5
    assert sorted(d["_id"] for d in await mongo_db["messages"].find({}).to_list(None)) == \
        sorted(ids)
    assert sorted(d["message_id"] for d in await mongo_db["mailbox"].find({}).to_list(None)) \
        == sorted(ids)
    assert sorted(d["_id"] for d in await mongo_db["delivery_status"].find({}).to_list(None)) \
        == sorted(f"{i}:x@example.org" for i in ids)

    nc = await nats.connect(env["SECMSG_NATS_URL"])
    try:
        js = nc.jetstream()
        for _ in range(50):
            infos = await js.consumers_info("SKELETON")
            if all(c.num_pending == 0 and c.num_ack_pending == 0 for c in infos):
                break
            await asyncio.sleep(0.1)
        assert sorted(c.name for c in infos) == [
            "skeleton-notify", "skeleton-store-received", "skeleton-store-sent"]
        assert all(c.num_pending == 0 and c.num_ack_pending == 0 for c in infos)
    finally:
        await nc.close()
