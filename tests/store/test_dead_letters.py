"""Dead letters end to end (real NATS + FerretDB): a handler that keeps failing on one event
dead-letters it after ``max_deliver`` deliveries while the others flow, and an operator lists
and replays it with the CLI -- or the admin endpoints -- once the cause is fixed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from faststream.asgi import AsgiFastStream
from faststream.nats import NatsBroker, TestApp
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig

from secmsg.shared import bus, mongo, subjects, worker
from secmsg.shared.events import MessageOpened
from secmsg.store import deadletters, service
from secmsg.store.adapters.mongo import MongoDeadLetterRepo
from secmsg.store.app import create_app
from secmsg.store.handlers import register
from secmsg.store.settings import StoreSettings
from tests.store.helpers import TENANT, drained, holds, wait_for

MAX_DELIVER = 3
TOKEN = "operator-token-" + "x" * 24


@pytest.fixture
def dl_env(store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    extra = {"SECMSG_STORE_MAX_DELIVER": str(MAX_DELIVER),
             "SECMSG_STORE_BACKOFF_BASE_S": "0.05", "SECMSG_STORE_BACKOFF_CAP_S": "0.2",
             "SECMSG_STORE_DEAD_LETTERS_POLL_S": "0.2",
             "SECMSG_STORE_ADMIN_TOKEN": TOKEN}
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    return {**store_env, **extra}


@pytest.fixture
async def app(dl_env: dict[str, str]) -> AsyncIterator[AsgiFastStream]:
    a = create_app()
    async with TestApp(a):
        yield a


def opened(n: int) -> MessageOpened:
    return MessageOpened(tenant_id=TENANT, message_id=uuid.uuid4().hex, event_id=f"ev{n}-"
                         + uuid.uuid4().hex[:8], recipient=f"r{n}@example.org")


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "secmsg.store.deadletters", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def audited(db: Any, event_id: str) -> bool:
    return await db[mongo.AUDIT].find_one({"event_id": event_id}) is not None


async def test_a_bug_on_one_event_is_dead_lettered_then_replayed_by_the_operator(
        app: AsgiFastStream, dl_env: dict[str, str], publisher: bus.EventPublisher,
        nc: NATS, mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = service.audit_document
    bad = opened(1)
    tries: list[str] = []

    def buggy(event: Any) -> dict[str, Any]:
        if event.event_id == bad.event_id:
            tries.append(event.event_id)
            raise KeyError("template_variable")  # a bug, not a TransientError
        return real(event)

    monkeypatch.setattr(service, "audit_document", buggy)
    before, after = opened(0), opened(2)
    for ev in (before, bad, after):
        await publisher.publish(ev, f"{ev.event_id}:opened")

    dead = await wait_for(lambda: mongo_db[mongo.DEAD_LETTERS].find_one({}))
    # Audit events come in batches: a delivery that fails in a batch is tried again alone
    # (worker), so the bug ran at least once per delivery.
    assert len(tries) >= MAX_DELIVER
    await wait_for(lambda: audited(mongo_db, before.event_id))
    await wait_for(lambda: audited(mongo_db, after.event_id))
    assert not await audited(mongo_db, bad.event_id)
    # Under load an ack wait (3 s here) can expire mid-batch: JetStream then counts one more
    # delivery, so the worker may give up at a later delivery than MAX_DELIVER, never earlier.
    assert dead["deliveries"] >= MAX_DELIVER
    assert dead["reason"] == (f"KeyError: 'template_variable' (gave up after "
                              f"{dead['deliveries']} deliveries)")
    assert (dead["service"], dead["consumer"], dead["state"]) == (
        "store", subjects.STORE_AUDIT, "open")
    assert dead["subject"] == subjects.subject(TENANT, subjects.MESSAGE_OPENED)
    # The stream sequence 20 digits wide: ``_id`` order is stream order (the list pages by it).
    assert dead["_id"] == f"{subjects.STREAM}:{dead['stream_seq']:020d}"
    assert MessageOpened.model_validate_json(dead["payload"]) == bad
    await wait_for(lambda: drained(nc, subjects.STORE_AUDIT))
    await wait_for(lambda: holds(deadletters.OPEN.labels("store")._value.get() == 1))

    # Later events keep flowing.
    later = opened(3)
    await publisher.publish(later, f"{later.event_id}:opened")
    await wait_for(lambda: audited(mongo_db, later.event_id))

    # The operator finds it, the cause is fixed, the operator replays it.
    code, out, err = await cli(dl_env, "list")
    assert code == 0, err
    assert dead["_id"] in out and "KeyError" in out and "1 dead letter(s)" in err
    code, out, _ = await cli(dl_env, "show", dead["_id"])
    assert code == 0 and json.loads(out)["payload"] == dead["payload"].decode()
    monkeypatch.setattr(service, "audit_document", real)
    code, out, err = await cli(dl_env, "replay", dead["_id"])
    assert code == 0, err
    assert json.loads(out)["state"] == "replayed"
    await wait_for(lambda: audited(mongo_db, bad.event_id))
    letter = await mongo_db[mongo.DEAD_LETTERS].find_one({"_id": dead["_id"]})
    assert (letter["state"], letter["replays"]) == ("replayed", 1)
    assert letter["replay_seq"] > dead["stream_seq"]
    assert await mongo_db[mongo.DEAD_LETTERS].count_documents({}) == 1
    await wait_for(lambda: holds(deadletters.OPEN.labels("store")._value.get() == 0))
    # A second replay needs --force; an unknown id is refused.
    assert (await cli(dl_env, "replay", dead["_id"]))[0] == 1
    code, _, err = await cli(dl_env, "show", "SECMSG:999999")
    assert code == 1 and "no dead letter" in err


async def test_admin_endpoints_need_the_operator_token_and_replay_or_discard(
        app: AsgiFastStream, nc: NATS, mongo_db: Any) -> None:
    subj = subjects.subject(TENANT, subjects.AUDIT_RECORDED)
    for body in (b"{not json", b"[]"):
        await nc.jetstream().publish(subj, body, stream=subjects.STREAM)
    await wait_for(lambda: _count(mongo_db, 2))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = await http.get("/admin/dead-letters", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = await http.get("/admin/dead-letters", headers=auth)
        assert r.status_code == 200
        letters = r.json()["dead_letters"]
        assert {x["subject"] for x in letters} == {subj} and len(letters) == 2
        assert all(x["reason"].startswith("undecodable event") for x in letters)
        for bad_query in ("state=maybe", "limit=0", "limit=x", "state=open&state=all"):
            r = await http.get(f"/admin/dead-letters?{bad_query}", headers=auth)
            assert r.status_code == 400 and r.json()["detail"], bad_query
        first, second = letters
        r = await http.get("/admin/dead-letter", params={"id": "SECMSG:424242"}, headers=auth)
        assert r.status_code == 404
        r = await http.get("/admin/dead-letter", params={"id": first["id"]}, headers=auth)
        assert r.status_code == 200 and r.json()["payload"] in ("{not json", "[]")

        r = await http.post("/admin/dead-letter/discard", params={"id": first["id"],
                                                                  "note": "test"},
                            headers=auth)
        assert r.status_code == 200 and r.json()["state"] == "discarded"
        r = await http.post("/admin/dead-letter/replay", params={"id": first["id"]},
                            headers=auth)
        assert r.status_code == 409
        r = await http.post("/admin/dead-letter/replay", params={"id": second["id"]},
                            headers=auth)
        assert r.status_code == 200 and r.json()["replays"] == 1
        # Still poison: the replay is dead-lettered again, as a new letter.
        await wait_for(lambda: _count(mongo_db, 3))
        r = await http.get("/admin/dead-letters?state=all", headers=auth)
        assert sorted(x["state"] for x in r.json()["dead_letters"]) == [
            "discarded", "open", "replayed"]
        assert (await http.get("/admin/dead-letter", headers=auth)).status_code == 400


async def test_the_list_pages_by_id_with_an_after_cursor(app: AsgiFastStream,
                                                         mongo_db: Any) -> None:
    repo = MongoDeadLetterRepo(mongo_db)
    # Sequences 1..23 (9 before 10 before 23: numeric order, not text order), two services;
    # every third one already replayed. Kept through the repository store's workers use.
    for seq in range(1, 24):
        await repo.keep(worker.DeadLetterRecorded.of(worker.DeadLetter(
            service="notify" if seq % 2 else "store", consumer="c", subject="s",
            reason="r", payload=b"{}", stream_seq=seq)))
        if seq % 3 == 0:
            await repo.update(f"SECMSG:{seq}", {"state": "replayed"})
    await repo.keep(worker.DeadLetterRecorded.of(worker.DeadLetter(  # a redelivery: kept once
        service="notify", consumer="c", subject="s", reason="r", payload=b"{}", stream_seq=1)))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def walk(query: str) -> tuple[list[int], int]:
        seqs: list[int] = []
        pages, after = 0, ""
        async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
            while True:
                r = await http.get(f"/admin/dead-letters?{query}{after}", headers=auth)
                assert r.status_code == 200, r.text
                body = r.json()
                pages += 1
                seqs += [x["stream_seq"] for x in body["dead_letters"]]
                if body["next"] is None:
                    return seqs, pages
                after = f"&after={body['next']}"

    assert await walk("state=all&limit=5") == (list(range(23, 0, -1)), 5)
    assert await walk("state=all&limit=23") == (list(range(23, 0, -1)), 1)
    opened_notify = [n for n in range(23, 0, -1) if n % 2 and n % 3]
    assert (await walk("service=notify&limit=3"))[0] == opened_notify
    assert (await walk("state=replayed&limit=4"))[0] == list(range(21, 0, -3))
    async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
        for bad in ("after=x", "after=SECMSG:1%20or%201", "after=" + "a:" + "9" * 70):
            r = await http.get(f"/admin/dead-letters?{bad}", headers=auth)
            assert r.status_code == 400 and "after" in r.json()["detail"], bad
        # Operators may still name a letter by its short id.
        r = await http.get("/admin/dead-letter", params={"id": "SECMSG:9"}, headers=auth)
        assert r.status_code == 200 and r.json()["stream_seq"] == 9


async def test_admin_endpoints_do_not_exist_without_a_token(
        store_app: AsgiFastStream, nc: NATS) -> None:  # nc: the stream exists, as in service
    transport = httpx.ASGITransport(app=store_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
        r = await http.get("/admin/dead-letters", headers={"Authorization": "Bearer x"})
        assert r.status_code == 404


async def _count(db: Any, n: int) -> bool:
    return await db[mongo.DEAD_LETTERS].count_documents({}) >= n


async def test_a_consumer_made_by_an_older_version_gets_the_finite_limit(
        store_env: dict[str, str], nc: NATS) -> None:
    """JetStream binds an existing durable as it is: start-up (``ensure_consumers``, what
    store's start runs before its subscribers bind) must update it."""
    js = nc.jetstream()
    await js.add_consumer(subjects.STREAM, ConsumerConfig(
        durable_name=subjects.STORE_AUDIT, name=subjects.STORE_AUDIT,
        filter_subject=subjects.any_tenant("audit.>"), max_deliver=-1, ack_wait=30))
    cfg = StoreSettings()
    consumers = register(NatsBroker(), lambda: None, cfg)  # type: ignore[arg-type,return-value]
    await consumers.ensure_consumers(nc)
    info = await js.consumer_info(subjects.STREAM, subjects.STORE_AUDIT)
    assert info.config.max_deliver == cfg.max_deliver + worker.RECORD_RETRIES
    assert info.config.ack_wait == cfg.ack_wait_s
    # Twice is fine (every replica runs it at start-up).
    await consumers.ensure_consumers(nc)
