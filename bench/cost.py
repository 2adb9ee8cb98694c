"""The cost of one message: CPU ms per process, Mongo commands, S3 requests and NATS messages.

    uv run python -m bench.cost                       # 300 messages x (1, then 3 recipients)
    uv run python -m bench.cost --messages 100        # quicker
    uv run python -m bench.cost --prefill 50000       # the same, then again after 50,000 stored

Starts the local stack as ``bench.run`` does (NATS, FerretDB, versitygw, the SMTP sink, the
four services, each its own process), submits ``--messages`` small messages through ingest
(8 concurrent senders, one recipient each, then three each) and waits until every
notification reached the sink and every JetStream consumer is drained (store has recorded the
deliveries). Over exactly that window it takes, per process, the CPU time delta from
``/proc/<pid>/stat`` (user + system), and from the servers' own counters: FerretDB's commands
(its ``/debug/metrics``, by command name), versitygw's requests (lines in its access log) and
the messages NATS received from clients (``/varz`` ``in_msgs``, the bench's own polling
subtracted). Every figure is divided by the number of messages submitted.

Then the floors, on the same servers in the same run: the same one-recipient load through
``bench.skeleton`` (the architecture with nothing of secmsg in it; ``CostBench.skeleton``),
printed beside secmsg per process, and each part alone at full speed
(``CostBench.floor_parts``).

``--prefill N`` then stores N more messages the fast way and measures the same phases again,
printing both tables and the growth ratio (after / before). The fast way: the documents one
real message (submitted through the stack in the first phase) left in every collection are
cloned N times with fresh message ids (the 32-hex id replaced in the BSON bytes, so every
field that names the message follows) and inserted with ``insert_many`` in batches. So the
database holds N messages' worth of the very documents the pipeline writes (message, audit
events, delivery records), without N runs through the pipeline. Their S3 objects and NATS
history are not cloned (no hot-path query reads them by scanning). Prefilled messages carry
recipients ``p<n>@example.org`` (zero-padded).

Nothing in a test depends on these numbers: they are for the cost model in docs/cost.md.
Writes ``bench/results/cost-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import httpx

from bench.run import Bench, progress
from devstack.servers import Stack, free_port, start_stack, wait_port

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCESSES = ("ferretdb", "ingest", "store", "notify", "retrieve", "versitygw", "nats-server",
             "smtp sink")
HEX32 = re.compile(rb"[0-9a-f]{32}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (``/proc/<pid>/stat`` fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


_REQUEST = re.compile(r'"Document": \{\n\s*"([a-zA-Z]+)": "([^"]*)"')
_FIELDS = re.compile(r'"(filter|q|query)": (\{.*?\}),?\n')


def _shape(msg: str) -> str:
    """The filter's field names and operators (no values) of one logged request."""
    m = _FIELDS.search(msg)
    if not m:
        return "{}"
    return re.sub(r'("(?:[^"\\]|\\.)*")(:?)|Binary\([^)]*\)|[-0-9.]+(?=[,}\]])',
                  lambda t: t.group(0) if t.group(2) else "?", m.group(2))[:200]


_METRIC = re.compile(r'^ferretdb_client_requests_total\{command="([^"]+)",[^}]*\} (\S+)$')


@dataclass
class Snapshot:
    cpu: dict[str, float]
    mongo: dict[str, float]
    s3: int
    nats_in: int
    at: float = field(default_factory=time.perf_counter)


@dataclass
class CostBench(Bench):
    polls: int = 0  # NATS requests the bench itself made (subtracted from in_msgs)
    tracing: bool = False
    trace_from: int = 0

    def start_servers(self, base: Path) -> Stack:
        """The servers with their counters on: versitygw's access log, FerretDB's debug
        endpoint, NATS's monitoring port (restarted once with it, before any client)."""
        self.s3_log = base / "s3-access.log"
        os.environ["VGW_ACCESS_LOG"] = str(self.s3_log)
        self.ferret_debug, self.nats_mon = free_port(), free_port()
        stack = start_stack(base)
        stack.mongo.stop()
        stack.mongo.argv = [a for a in stack.mongo.argv if not a.startswith("--debug-addr")]
        stack.mongo.argv.append(f"--debug-addr=127.0.0.1:{self.ferret_debug}")
        stack.mongo.start()
        stack.nats.stop()
        stack.nats.argv = [*stack.nats.argv, "-m", str(self.nats_mon)]
        stack.nats.start()
        return stack

    def trace_queries(self) -> None:
        """Restart FerretDB with a debug log (after the prefill: its inserts would flood it) so
        each phase can list the commands it received other than inserts, by collection and
        filter shape (``query_shapes``). The log costs FerretDB CPU: a diagnosis, not a
        measurement."""
        mongo = self.stack.mongo
        mongo.stop()
        mongo.argv = [a for a in mongo.argv if not a.startswith("--log-")]
        mongo.argv += ["--log-level=debug", "--log-format=json"]
        self.trace_from = mongo.log_path.stat().st_size if mongo.log_path.exists() else 0
        mongo.start()

    def query_shapes(self) -> dict[str, int]:
        """``<command> <collection> <filter shape>`` -> count, for the requests FerretDB
        logged since the last call (``trace_queries``)."""
        out: dict[str, int] = {}
        path = self.stack.mongo.log_path
        with path.open("rb") as f:
            f.seek(self.trace_from)
            data = f.read()
            self.trace_from += len(data)
        for line in data.splitlines():
            if b'"Request message' not in line:
                continue
            try:
                msg = json.loads(line)["msg"]
            except (ValueError, KeyError):
                continue
            m = _REQUEST.search(msg)
            if not m or m.group(1) in ("insert", "hello", "isMaster", "ismaster", "ping",
                                       "endSessions", "getMore", "killCursors", "buildInfo"):
                continue
            shape = _shape(msg)
            key = f"{m.group(1)} {m.group(2)} {shape}"
            out[key] = out.get(key, 0) + 1
        return out

    async def periodic_cost(self) -> dict[str, float]:
        """FerretDB CPU ms of one run of each periodic job (mean of 3), run here with store's
        own code against the stack's database: the expiry purge (``purge_expired``: the
        buckets of the minutes since its last run, by ``_id``), the retention purge with the
        bench tenant given a policy under which nothing is due (``purge_retained``: a query
        on ``messages`` per tenant with a policy), and one page of the inbox (retrieve's
        ``list_live``, an ``_id`` range of ``mailbox``)."""
        from secmsg.retrieve.adapters.mongo import MongoMessageRepo as Inbox
        from secmsg.shared.blobstore import S3BlobStore
        from secmsg.store import service
        from secmsg.store.adapters.mongo import MongoMessageRepo as Store
        from secmsg.store.adapters.mongo import MongoPurgeClaims, MongoTenantPolicies

        pid = self.pids()["ferretdb"]
        blobs = S3BlobStore.from_settings(self.settings)
        store, claims = Store(self.db), MongoPurgeClaims(self.db)

        async def retention() -> int:
            await self.db["tenants"].update_one({"_id": "bench"},
                                                {"$set": {"policy.retention_days": 3650}})
            try:
                return await service.purge_retained(
                    messages=store, tenants=MongoTenantPolicies(self.db), claims=claims,
                    blobs=blobs, owner="bench", lease_s=60, limit=500)
            finally:
                await self.db["tenants"].update_one({"_id": "bench"},
                                                    {"$unset": {"policy.retention_days": ""}})

        async def old_candidates() -> list[Any]:
            # What the expiry purge read per run before the buckets (for the comparison).
            return await self.db["messages"].find(
                {"state": {"$in": ["stored", "purging"]},
                 "expires_at": {"$lte": datetime.now(UTC)}},
                {"tenant_id": 1, "state": 1, "objects.key": 1, "expires_at": 1},
                sort=[("expires_at", 1)], limit=100).to_list(None)

        reads = {
            "before: the expiry purge's old candidate read (`messages` by `state`, "
            "`expires_at`)": old_candidates,
            "store expiry purge, one run (`expiry_buckets` by `_id`)":
                lambda: service.purge_expired(messages=store, claims=claims, blobs=blobs,
                                              owner="bench", lease_s=60, limit=500),
            "store retention purge, one run, one tenant with a policy (`messages` by "
            "`tenant_id`, `state`, `received_at`)": retention,
            "inbox page, 20 (`mailbox` `_id` range)":
                lambda: Inbox(self.db).list_live(tenant_id="bench", address="p00001@example.org",
                                                 now=datetime.now(UTC), limit=20, after=None),
        }
        out: dict[str, float] = {}
        for name, read in reads.items():
            t = cpu_seconds(pid)
            for _ in range(3):
                await read()
            out[name] = (cpu_seconds(pid) - t) * 1000 / 3
        return out

    def pids(self) -> dict[str, int]:
        s = self.stack
        out = {"ferretdb": s.mongo.proc.pid, "versitygw": s.s3.proc.pid,  # type: ignore[union-attr]
               "nats-server": s.nats.proc.pid, "smtp sink": self.sink.pid}  # type: ignore[union-attr]
        for name, p in self.procs.items():
            out[name] = p.proc.pid  # type: ignore[union-attr]
        return out

    def mongo_counts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in http_text(f"http://127.0.0.1:{self.ferret_debug}/debug/metrics").splitlines():
            m = _METRIC.match(line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
        return out

    def snapshot(self) -> Snapshot:
        varz = json.loads(http_text(f"http://127.0.0.1:{self.nats_mon}/varz"))
        s3 = sum(1 for _ in self.s3_log.open("rb")) if self.s3_log.exists() else 0
        return Snapshot(cpu={k: cpu_seconds(pid) for k, pid in self.pids().items()},
                        mongo=self.mongo_counts(), s3=s3, nats_in=int(varz["in_msgs"]))

    async def drained(self, timeout: float = 900) -> None:
        """Until every JetStream consumer has nothing pending and nothing unacknowledged."""
        import nats

        nc = await nats.connect(self.settings.nats_url)
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                busy = 0
                streams = await js.streams_info()
                self.polls += 1
                for st in streams:
                    for c in await js.consumers_info(st.config.name):
                        self.polls += 1
                        busy += c.num_pending + c.num_ack_pending
                if not busy:
                    return
                await asyncio.sleep(0.5)
            raise RuntimeError("consumers not drained in time")
        finally:
            await nc.close()

    async def submit(self, n: int, tag: str, recipients: int, url: str | None = None
                     ) -> set[str]:
        sent: set[str] = set()
        sem = asyncio.Semaphore(8)
        url = url or self.procs["ingest"].base_url + "/v1/messages"
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=8)) as http:
            async def one(i: int) -> None:
                env = json.dumps({"from": "alice@bench.example",
                                  "to": [f"{tag}-{i}-{r}@example.org" for r in range(recipients)],
                                  "subject": f"{tag} {i}", "text": "hello"}).encode()
                async with sem:
                    r = await http.post(url, headers={"Authorization": f"Bearer {self.api_key}"},
                                        files=[("envelope", (None, env, "application/json"))])
                    assert r.status_code == 202, r.text
                    sent.add(r.json()["message_id"])

            await asyncio.gather(*(one(i) for i in range(n)))
        return sent

    async def wait_mails(self, want: int, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mail_dir.exists() and sum(
                    1 for e in os.scandir(self.mail_dir) if e.name.endswith(".eml")) >= want:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("notifications did not all arrive")

    async def phase(self, n: int, recipients: int, tag: str) -> dict[str, Any]:
        """Submit ``n`` messages and measure until the pipeline is quiet again."""
        await self.drained()
        mails = sum(1 for e in os.scandir(self.mail_dir) if e.name.endswith(".eml")) \
            if self.mail_dir.exists() else 0
        polls0 = self.polls
        before = self.snapshot()
        progress(f"{tag}: {n} messages x {recipients} recipient(s)...")
        ids = await self.submit(n, tag, recipients)
        await self.wait_mails(mails + n * recipients)
        await self.drained()
        after = self.snapshot()
        polls = self.polls - polls0
        self.last_ids = ids
        mongo = {k: (after.mongo.get(k, 0) - before.mongo.get(k, 0)) / n
                 for k in after.mongo if after.mongo.get(k, 0) - before.mongo.get(k, 0) > 0}
        cpu = {k: (after.cpu[k] - before.cpu[k]) * 1000 / n for k in PROCESSES}
        shapes = self.query_shapes() if self.tracing else {}
        for q, c in sorted(shapes.items(), key=lambda kv: -kv[1]):
            progress(f"  {c:5d} x {q}")
        return {"queries": shapes, "messages": n, "recipients": recipients,
                "seconds": after.at - before.at,
                "cpu_ms": cpu, "cpu_ms_total": sum(cpu.values()),
                "mongo_commands": mongo, "mongo_total": sum(mongo.values()),
                "s3_requests": (after.s3 - before.s3) / n,
                # the bench's polls: one request in, one reply out, each
                "nats_in_msgs": (after.nats_in - before.nats_in - polls) / n}

    async def message_documents(self, mid: str) -> dict[str, list[bytes]]:
        """collection -> the BSON of every document that names message ``mid`` (what the
        pipeline wrote for it; the expiry buckets, one per minute, left out)."""
        templates: dict[str, list[bytes]] = {}
        for name in await self.db.list_collection_names():
            if name == "expiry_buckets":
                continue
            docs = await self.db[name].find({}).to_list(None)
            raw = [bson.encode(d) for d in docs]
            hits = [r for r in raw if mid.encode() in r]
            if hits:
                templates[name] = hits
        return templates

    async def floor_parts(self, n: int, mid: str, templates: dict[str, list[bytes]]
                          ) -> dict[str, float]:
        """CPU ms per message of the parts every one-recipient message needs, each measured
        on the same servers with nothing of secmsg in the way, at the phases' load (``n``
        messages, 8 at a time): the same CPU a perfect implementation would still spend.

        - HTTP: the same submissions posted the same way to a bare ASGI app that reads the
          body and answers 202 (``bench.skeleton bare``: uvicorn, httptools, uvloop); its CPU.
        - JetStream: the three events of a message (``message.received``, ``.stored``,
          ``notification.sent``): 3n publishes of an event-sized payload (8 in flight) and a
          pull consumer fetching them in batches of 16 and acking each; nats-server's CPU and
          the client's (this process: in secmsg that client runs inside the services).
        - MongoDB: the documents one real message left (``message_documents``), cloned n
          times and written with ``insert_many``, 16 messages per command as store batches
          them; FerretDB's CPU and the client's. (Removed again afterwards.)
        - SMTP: n of the captured notifications sent by raw aiosmtplib over 4 connections to
          the same sink; the sink's CPU and the client's.

        Every part leaves something out that the pipeline pays (an update per delivery, the
        KV claim, rendering, encryption, the audit trail), so their sum is a floor."""
        import nats

        pids = self.pids()
        out: dict[str, float] = {}

        async def spent(pid: int, f: Callable[[], Awaitable[object]]) -> float:
            """CPU seconds of ``pid`` and of this process (the client) over awaiting ``f()``."""
            before, mine = cpu_seconds(pid), time.process_time()
            await f()
            return cpu_seconds(pid) - before + time.process_time() - mine

        progress(f"floor, HTTP: {n} submissions to a bare ASGI app (bench.skeleton bare)...")
        port = free_port()
        app = subprocess.Popen([sys.executable, "-m", "bench.skeleton", "bare", "--port",
                                str(port)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            url = f"http://127.0.0.1:{port}/v1/messages"
            await self.submit(20, "floorwarm", 1, url=url)
            before = cpu_seconds(app.pid)
            await self.submit(n, "floor", 1, url=url)  # the load generator's CPU not counted
            out["HTTP request accepted (uvicorn + httptools, a bare app)"] = \
                (cpu_seconds(app.pid) - before) * 1000 / n
        finally:
            app.terminate()
            app.wait(10)

        progress(f"floor, JetStream: {3 * n} events published, fetched and acked...")
        nc = await nats.connect(self.settings.nats_url)
        js = nc.jetstream()
        await js.add_stream(name="COSTFLOOR", subjects=["costfloor.>"])
        sub = await js.pull_subscribe("costfloor.>", durable="costfloor", stream="COSTFLOOR")
        payload = b"x" * 600  # about the size of an event
        sem = asyncio.Semaphore(8)

        async def pub(i: int) -> None:
            async with sem:
                await js.publish(f"costfloor.{i % 16}", payload,
                                 headers={"Nats-Msg-Id": f"costfloor-{i}"})

        async def events() -> None:
            await asyncio.gather(*(pub(i) for i in range(3 * n)))
            got = 0
            while got < 3 * n:
                for m in await sub.fetch(16, timeout=5):
                    await m.ack()
                    got += 1

        try:
            out["JetStream: 3 events published, fetched, acked (nats-server + nats-py)"] = \
                await spent(pids["nats-server"], events) * 1000 / n
        finally:
            await js.delete_stream("COSTFLOOR")
            await nc.close()

        progress(f"floor, MongoDB: the documents of {n} messages, insert_many of 16...")
        floor_db = self.mongo["bench_floor"]  # an empty database, dropped afterwards
        batches: list[tuple[str, list[dict[str, Any]]]] = []
        for start in range(0, n, 16):
            for name, raws in templates.items():
                batches.append((name, [bson.decode(r.replace(mid.encode(),
                                                             os.urandom(16).hex().encode()))
                                       for _ in range(start, min(n, start + 16)) for r in raws]))

        async def writes() -> None:
            for name, docs in batches:
                await floor_db[name].insert_many(docs, ordered=False)

        try:
            out["MongoDB: the message's documents, insert_many (FerretDB + PyMongo)"] = \
                await spent(pids["ferretdb"], writes) * 1000 / n
        finally:
            await self.mongo.drop_database("bench_floor")

        progress(f"floor, SMTP: {n} captured notifications by raw aiosmtplib to the sink...")
        mails = [f.read_bytes() for f in sorted(self.mail_dir.glob("*.eml"))[-n:]]
        out["SMTP: the notification (aiosmtplib + the sink)"] = \
            await spent(pids["smtp sink"], lambda: self.raw_smtp(mails)) * 1000 / len(mails)
        return out

    async def skeleton(self, n: int, mid: str, templates: dict[str, list[bytes]]
                       ) -> dict[str, Any]:
        """The same submissions through ``bench.skeleton`` (secmsg's architecture with nothing
        of secmsg in it: three processes over the same servers), measured as ``phase``
        measures the pipeline: CPU ms per message of every process, from the first
        submission until every notification reached the sink and every consumer is drained.
        Its database is a separate, empty one (dropped afterwards)."""
        import nats

        work = self.base / "skeleton"
        work.mkdir(exist_ok=True)
        docs = work / "documents.bson"
        docs.write_bytes(b"".join(
            bson.encode({"collection": name, "template_id": mid, "document": bson.decode(r)})
            for name, raws in templates.items() for r in raws))
        mail = work / "notification.eml"
        mail.write_bytes(sorted(self.mail_dir.glob("*.eml"))[-1].read_bytes())
        nc = await nats.connect(self.settings.nats_url)
        js = nc.jetstream()
        await js.add_stream(name="SKELETON", subjects=["skeleton.>"])
        env = {**os.environ, "SECMSG_MONGO_DB": "bench_skeleton"}
        port = free_port()
        argvs = {"skeleton http": ["http", "--port", str(port)],
                 "skeleton store": ["store", "--documents", str(docs)],
                 "skeleton notify": ["notify", "--mail", str(mail),
                                     "--smtp-port", str(self.smtp_port)]}
        logs = {name: (work / f"{argv[0]}.log").open("wb") for name, argv in argvs.items()}
        procs = {name: subprocess.Popen([sys.executable, "-m", "bench.skeleton", *argv],
                                        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=logs[name])
                 for name, argv in argvs.items()}
        try:
            wait_port(port, proc=procs["skeleton http"])
            for _ in range(300):
                if len(await js.consumers_info("SKELETON")) == 3:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the skeleton's consumers did not start (logs in {work})")
            url = f"http://127.0.0.1:{port}/v1/messages"

            async def run(count: int, tag: str) -> tuple[dict[str, float], float]:
                await self.drained()
                mails = sum(1 for e in os.scandir(self.mail_dir) if e.name.endswith(".eml"))
                pids = {**self.pids(), **{k: p.pid for k, p in procs.items()}}
                before = {k: cpu_seconds(pid) for k, pid in pids.items()}
                t = time.perf_counter()
                progress(f"{tag}: {count} messages through bench.skeleton...")
                await self.submit(count, tag, 1, url=url)
                await self.wait_mails(mails + count)
                await self.drained()
                return ({k: (cpu_seconds(pid) - before[k]) * 1000 / count
                         for k, pid in pids.items()}, time.perf_counter() - t)

            await run(20, "skeletonwarm")
            cpu, seconds = await run(n, "skeleton")
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(10)
            for log in logs.values():
                log.close()
            await js.delete_stream("SKELETON")
            await nc.close()
            await self.mongo.drop_database("bench_skeleton")
        keep = ("skeleton http", "skeleton store", "skeleton notify", "ferretdb",
                "nats-server", "smtp sink")
        cpu = {k: cpu[k] for k in keep}
        return {"messages": n, "seconds": seconds, "cpu_ms": cpu,
                "cpu_ms_total": sum(cpu.values())}

    async def prefill(self, n: int, mid: str, templates: dict[str, list[bytes]]) -> None:
        """Clone message ``mid``'s documents (``message_documents``) ``n`` times (see the
        module docstring)."""
        progress(f"prefill: writing {n} messages straight to the database, not through the "
                 f"pipeline: the {sum(map(len, templates.values()))} documents message {mid} "
                 f"left ({', '.join(templates)}) cloned with fresh ids, insert_many of 1,000...")
        addr = re.compile(rb"[a-z0-9]+-\d+-\d+@example\.org")
        batch = 1000
        t = time.perf_counter()
        for start in range(0, n, batch):
            count = min(batch, n - start)
            for name, raws in templates.items():
                docs = []
                for k in range(start, start + count):
                    new = os.urandom(16).hex().encode()
                    # Same-length replacements keep the BSON length prefixes right.
                    for r in raws:
                        b = r.replace(mid.encode(), new)
                        docs.append(bson.decode(addr.sub(lambda m, k=k: _same_length(m, k), b)))
                await self.db[name].insert_many(docs, ordered=False)
                if name == "messages":
                    await self._file_expiries(docs)
            if (start // batch) % 10 == 0:
                progress(f"  prefill {start + count}/{n} ({time.perf_counter() - t:.0f} s)")
        progress(f"prefill: {n} messages in {time.perf_counter() - t:.0f} s")


    async def _file_expiries(self, docs: list[dict[str, Any]]) -> None:
        """What store does when it records a batch: the ids of the batch under their expiry
        minutes, one update per bucket (``secmsg.store.expiry``; ``$push``, not store's
        ``$addToSet``: the ids are fresh, and FerretDB checks every id against the bucket)."""
        from secmsg.store import expiry

        now = datetime.now(UTC)
        by_minute: dict[str, list[str]] = {}
        for d in docs:
            if d.get("state") == "stored" and d.get("expires_at") is not None:
                key = expiry.bucket_id(expiry.bucket_minute(d["expires_at"], now=now))
                by_minute.setdefault(key, []).append(d["_id"])
        for key, ids in by_minute.items():
            await self.db["expiry_buckets"].update_one(
                {"_id": key}, {"$push": {"ids": {"$each": ids}}}, upsert=True)


def _same_length(m: re.Match[bytes], k: int) -> bytes:
    """``p<k>`` zero-padded to the local part's length: the BSON sizes stay right."""
    local, _, domain = m.group(0).partition(b"@")
    return f"p{k:0{len(local) - 1}d}@".encode() + domain


def table(title: str, phases: list[dict[str, Any]], compare: list[dict[str, Any]] | None = None
          ) -> str:
    head = [f"\n{title}\n", "| per message | " + " | ".join(
        f"{p['recipients']} rcpt" + (" (after)" if compare else "") for p in phases) + " |"]
    if compare:
        head[1] = "| per message | " + " | ".join(
            f"{p['recipients']} rcpt before | after | growth" for p in phases) + " |"
    cols = 3 if compare else 1
    head.append("|---|" + "---|" * (cols * len(phases)))

    def row(label: str, get: Any, fmt: str = "{:.2f}") -> str:
        cells = []
        for i, p in enumerate(phases):
            if compare:
                b, a = get(compare[i]), get(p)
                cells += [fmt.format(b), fmt.format(a), f"{a / b:.2f}x" if b else "-"]
            else:
                cells.append(fmt.format(get(p)))
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [*head]
    for proc in PROCESSES:
        lines.append(row(f"CPU ms, {proc}", lambda p, proc=proc: p["cpu_ms"][proc]))
    lines.append(row("**CPU ms, total**", lambda p: p["cpu_ms_total"]))
    cmds = sorted({c for p in phases + (compare or []) for c in p["mongo_commands"]})
    for c in cmds:
        lines.append(row(f"Mongo `{c}`", lambda p, c=c: p["mongo_commands"].get(c, 0)))
    lines.append(row("**Mongo commands**", lambda p: p["mongo_total"]))
    lines.append(row("S3 requests", lambda p: p["s3_requests"]))
    lines.append(row("NATS messages in", lambda p: p["nats_in_msgs"]))
    lines.append(row("wall seconds (whole phase)", lambda p: p["seconds"], "{:.1f}"))
    return "\n".join(lines)


def floor_table(floor: dict[str, float], skeleton: dict[str, Any], phase: dict[str, Any]
                ) -> str:
    """secmsg's one-recipient cost beside its floors, measured on the same stack in the same
    run: the architecture with nothing of secmsg in it (``bench.skeleton``), and the parts
    alone (``CostBench.floor_parts``)."""
    total, parts = phase["cpu_ms_total"], sum(floor.values())
    sk = skeleton["cpu_ms_total"]
    pairs = (("ingest", "skeleton http"), ("store", "skeleton store"),
             ("notify", "skeleton notify"), ("ferretdb", "ferretdb"),
             ("nats-server", "nats-server"), ("smtp sink", "smtp sink"))
    lines = [f"\nsecmsg beside the same architecture with nothing of secmsg in it "
             f"(bench.skeleton; same servers, same load: {skeleton['messages']} messages, "
             "8 senders, 1 recipient)\n",
             "| CPU ms per message | secmsg | skeleton | secmsg / skeleton |", "|---|---|---|---|",
             *(f"| {a} / {b} | {phase['cpu_ms'][a]:.2f} | {skeleton['cpu_ms'][b]:.2f} | "
               f"{phase['cpu_ms'][a] / skeleton['cpu_ms'][b]:.2f} |"
               for a, b in pairs if skeleton["cpu_ms"][b]),
             f"| **total** (secmsg: also retrieve, versitygw) | **{total:.2f}** | **{sk:.2f}** "
             f"| **{total / sk:.2f}** |",
             f"| issue 13's target | 6.00 | | {6 / sk:.2f} |",
             "\nThe parts alone, each at full speed (a lower floor: see "
             "``CostBench.floor_parts``)\n",
             "| part | CPU ms per message |", "|---|---|",
             *(f"| {k} | {v:.2f} |" for k, v in floor.items()),
             f"| **sum of the parts** | **{parts:.2f}** (secmsg {total / parts:.2f}x, "
             f"the target {6 / parts:.2f}x) |"]
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="secmsg-cost-"))
    if not args.periodic:
        # store's expiry and retention purges run once at start-up (empty database) and then
        # not within the run: a cost per interval, not per message, measured on its own below
        # (``periodic_cost``; the retention purge still reads all messages on FerretDB/SQLite).
        os.environ["SECMSG_STORE_EXPIRY_INTERVAL_S"] = "86400"
    bench = CostBench(base, False)
    results: dict[str, Any] = {"messages": args.messages, "prefill": args.prefill,
                               "cpus": os.cpu_count()}
    try:
        await bench.setup()
        progress("warm-up: 20 messages (connections, caches, consumers)...")
        await bench.phase(20, 1, "warm")
        template = bench.last_ids
        empty = [await bench.phase(args.messages, r, f"empty{r}") for r in (1, 3)]
        results["empty"] = empty
        print(table("On an empty database (after a 20-message warm-up)", empty))
        # What one real (warm-up) message left in the database: cloned by the floors' and
        # the skeleton's writes and by the prefill.
        mid = sorted(template)[0]
        documents = await bench.message_documents(mid)
        skeleton = await bench.skeleton(args.messages, mid, documents)
        results["skeleton"] = skeleton
        floor = await bench.floor_parts(args.messages, mid, documents)
        results["floor_parts"] = floor
        print(floor_table(floor, skeleton, empty[0]))
        results["periodic_empty"] = await bench.periodic_cost()
        if args.prefill:
            await bench.prefill(args.prefill, mid, documents)
            results["periodic_after_prefill"] = await bench.periodic_cost()
            print(f"\nPeriodic reads, FerretDB CPU ms per run (not per message), empty vs "
                  f"after {args.prefill:,}\n\n| read | empty | after | growth |\n|---|---|---|---|")
            for k, v in results["periodic_empty"].items():
                a = results["periodic_after_prefill"][k]
                print(f"| {k} | {v:.1f} | {a:.1f} | {a / v if v else 0:.1f}x |")
            if args.trace:
                bench.trace_queries()
                bench.tracing = True
                await bench.drained()
            full = [await bench.phase(args.messages, r, f"full{r}") for r in (1, 3)]
            results["after_prefill"] = full
            print(table(f"After {args.prefill:,} stored messages, next to the empty database",
                        full, compare=empty))
    finally:
        bench.teardown()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300,
                    help="messages per phase (default 300)")
    ap.add_argument("--prefill", type=int, default=0,
                    help="store this many messages (fast path), then measure again")
    ap.add_argument("--trace", action="store_true",
                    help="after the prefill, log FerretDB's requests (debug log) and print the "
                         "non-insert commands of each phase by collection and filter shape "
                         "(costs FerretDB CPU: to find a growing query, not to measure)")
    ap.add_argument("--periodic", action="store_true",
                    help="leave store's expiry/retention purge on its default 60 s interval "
                         "inside the phases (by default it is measured on its own)")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
