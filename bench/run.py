"""secmsg benchmark: the local stack measured next to its floors, side by side, in one run.

    uv run python -m bench.run                 # full run (1 GiB object, 1000 notifications)
    uv run python -m bench.run --quick         # small sizes, for a smoke run
    uv run python -m bench.run --only io       # upload/download figures alone (--size MiB)

Prints a table of ratios (secmsg / floor) and writes ``bench/results/<time>.json``.
Floors are measured in the same run on the same servers: raw minio PUT/GET of the same bytes,
raw aiosmtplib sending the same rendered notifications to the same SMTP sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx

from devstack.servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    Stack,
    ensure_binaries,
    free_port,
    make_s3,
    start_stack,
    wait_port,
)
from devstack.services import ServiceProc
from devstack.tls import ensure_cert
from secmsg.shared.subjects import STORE_DELIVERY, STORE_RECEIVED, STREAM

ROOT = Path(__file__).resolve().parent.parent


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM (Linux: write 5 to clear_refs) so the peak covers only what follows."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        progress("could not reset peak RSS; it then includes start-up")


@dataclass
class Bench:
    base: Path
    quick: bool
    profile: bool = False  # sample ingest/retrieve with py-spy during the transfers
    results: dict[str, Any] = field(default_factory=dict)

    async def setup(self) -> None:
        progress("starting servers (NATS, FerretDB, versitygw) and the SMTP sink...")
        self.stack = self.start_servers(self.base / "servers")
        self.mail_dir = self.base / "mail"
        self.smtp_port = free_port()
        self.sink = subprocess.Popen(
            [sys.executable, "-m", "devstack.smtp_sink", "--port", str(self.smtp_port),
             "--dir", str(self.mail_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=ROOT)
        wait_port(self.smtp_port)
        cert, key = ensure_cert(self.base / "tls")
        from secmsg.shared.crypto import KeyRing

        self.env = {**self.stack.env(), "SECMSG_ENVIRONMENT": "test",
                    "SECMSG_LOG_LEVEL": "INFO", "SECMSG_MONGO_DB": "bench",
                    "SECMSG_S3_BUCKET": "bench", "SECMSG_KEYRING": KeyRing.generate_spec(1),
                    "SECMSG_SMTP_HOST": "127.0.0.1", "SECMSG_SMTP_PORT": str(self.smtp_port),
                    "SECMSG_SMTP_TLS": "none", "SECMSG_RETRIEVE_TLS_CERT": str(cert),
                    "SECMSG_RETRIEVE_TLS_KEY": str(key)}
        os.environ.update(self.env)
        self.procs: dict[str, ServiceProc] = {}
        for name in ("store", "notify", "retrieve", "ingest"):
            # each service as its own NATS user, as in production
            p = ServiceProc(name, {**self.env, **self.stack.nats.service_env(name)},
                            self.base / f"{name}.log", free_port(),
                            tls=(name == "retrieve"))
            if name == "retrieve":
                p.env = {**p.env, "SECMSG_RETRIEVE_PUBLIC_URL": p.base_url}
            progress(f"starting {name}...")
            p.start(timeout=60)
            self.procs[name] = p
        from secmsg.ingest.admin import create_api_key, create_tenant
        from secmsg.shared.blobstore import S3BlobStore
        from secmsg.shared.mongo import make_client
        from secmsg.shared.settings import CommonSettings

        self.settings = CommonSettings()
        self.mongo = make_client(self.settings)
        self.db = self.mongo[self.settings.mongo_db]
        await create_tenant(self.db, tenant_id="bench", name="Bench Org",
                            max_message_bytes=8 * 1024**3, max_recipients=1000)
        self.api_key = await create_api_key(self.db, tenant_id="bench", label="bench")
        self.blobs = S3BlobStore.from_settings(self.settings)
        await self.blobs.ensure_bucket()

    def start_servers(self, base: Path) -> Stack:
        """NATS, FerretDB and versitygw (a hook: ``bench.cost`` adds their counters)."""
        return start_stack(base)

    def teardown(self) -> None:
        for p in reversed(list(getattr(self, "procs", {}).values())):
            p.stop()
        if getattr(self, "sink", None):
            self.sink.terminate()
            self.sink.wait(10)
        if getattr(self, "stack", None):
            self.stack.stop()

    # -- large object: memory and throughput ---------------------------------------------

    def sampler(self, name: str) -> subprocess.Popen[bytes] | None:
        """``py-spy record`` of one service while a transfer runs (``--profile``); its
        collapsed stacks land beside the results (``bench/results/<time>-<name>.txt``, the
        input of any flame-graph tool)."""
        spy = shutil.which("py-spy") or shutil.which(str(Path.home() / ".local/bin/py-spy"))
        if not self.profile or spy is None:
            return None
        proc = self.procs[name].proc
        assert proc is not None
        out = self.base / f"{name}.txt"
        self.profiles = [*getattr(self, "profiles", []), out]
        return subprocess.Popen([spy, "record", "--nonblocking", "--threads", "-r", "200",
                                 "-f", "raw", "-p", str(proc.pid), "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def stop_sampler(spy: subprocess.Popen[bytes] | None) -> None:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(60)

    async def large_object(self, size: int) -> None:
        path = self.base / "large.bin"
        progress(f"writing a {size / 2**20:.0f} MiB test file...")
        block = os.urandom(1 << 20)
        with path.open("wb") as f:
            for _ in range(size >> 20):
                f.write(block)
        client = self.blobs._client

        progress("raw minio PUT (floor)...")
        t = time.perf_counter()
        await asyncio.to_thread(client.fput_object, self.blobs.bucket, "bench/raw-put", str(path),
                                part_size=8 * 1024 * 1024, num_parallel_uploads=1)
        raw_put = time.perf_counter() - t

        ingest = self.procs["ingest"]
        reset_peak_rss(ingest.proc.pid)  # type: ignore[union-attr]
        progress("upload through ingest (streaming encryption)...")
        envelope = json.dumps({"from": "alice@bench.example", "to": ["big@example.org"],
                               "subject": "large", "text": "see attachment"})
        spy = self.sampler("ingest")
        ingest_cpu = cpu_s(ingest.proc.pid)  # type: ignore[union-attr]
        t = time.perf_counter()
        async with httpx.AsyncClient(timeout=3600) as http:
            with path.open("rb") as f:
                r = await http.post(ingest.base_url + "/v1/messages",
                                    headers={"Authorization": f"Bearer {self.api_key}"},
                                    files=[("envelope", (None, envelope.encode(),
                                                         "application/json")),
                                           ("attachment", ("large.bin", f,
                                                           "application/octet-stream"))])
        ingest_put = time.perf_counter() - t
        ingest_cpu = cpu_s(ingest.proc.pid) - ingest_cpu  # type: ignore[union-attr]
        self.stop_sampler(spy)
        assert r.status_code == 202, r.text
        mid = r.json()["message_id"]
        ingest_rss = peak_rss_mib(ingest.proc.pid)  # type: ignore[union-attr]

        doc = None
        for _ in range(600):
            doc = await self.db["messages"].find_one({"_id": mid})
            if doc:
                break
            await asyncio.sleep(0.1)
        assert doc, "large message was not stored"
        obj = next(o for o in doc["objects"] if o["role"] == "attachment")

        progress("raw minio GET of the stored object (floor)...")
        t = time.perf_counter()

        def raw_get() -> int:
            resp = client.get_object(self.blobs.bucket, obj["key"])
            n = 0
            for chunk in resp.stream(1 << 20):
                n += len(chunk)
            resp.close()
            resp.release_conn()
            return n

        raw_bytes = await asyncio.to_thread(raw_get)
        raw_get_s = time.perf_counter() - t

        retrieve = self.procs["retrieve"]
        async with httpx.AsyncClient(base_url=retrieve.base_url, verify=False,
                                     timeout=3600) as web:
            token = await self.sign_in(web, "big@example.org")
            reset_peak_rss(retrieve.proc.pid)  # type: ignore[union-attr]
            progress("download through retrieve (HTTPS, decrypting)...")
            url = f"{retrieve.base_url}/v1/messages/{mid}/attachments/{obj['object_id']}"
            spy = self.sampler("retrieve")
            retrieve_cpu = cpu_s(retrieve.proc.pid)  # type: ignore[union-attr]
            t = time.perf_counter()
            got = await self.download(url, token)
            dl_s = time.perf_counter() - t
            retrieve_cpu = cpu_s(retrieve.proc.pid) - retrieve_cpu  # type: ignore[union-attr]
            self.stop_sampler(spy)
        assert got == size, (got, size)
        retrieve_rss = peak_rss_mib(retrieve.proc.pid)  # type: ignore[union-attr]

        # Production topology: TLS ends at the ingress, retrieve serves plain HTTP behind it.
        progress("download through retrieve behind a TLS-terminating ingress (plain HTTP)...")
        tls_vars = ("SECMSG_RETRIEVE_TLS_CERT", "SECMSG_RETRIEVE_TLS_KEY")
        plain_env = {k: v for k, v in retrieve.env.items() if k not in tls_vars}
        plain = ServiceProc("retrieve", {**plain_env, "SECMSG_RETRIEVE_ALLOW_PLAIN_HTTP": "true"},
                            self.base / "retrieve-plain.log", free_port())
        saved = {k: os.environ.pop(k) for k in tls_vars if k in os.environ}
        try:
            plain.start(timeout=60)
        finally:
            os.environ.update(saved)
        try:
            t = time.perf_counter()
            got = await self.download(
                f"{plain.base_url}/v1/messages/{mid}/attachments/{obj['object_id']}", token)
            plain_s = time.perf_counter() - t
        finally:
            plain.stop()
        assert got == size, (got, size)
        curl_raw = await self.raw_get_curl(obj["key"], size)
        progress("what TLS alone allows here: a bare TLS server streaming from memory "
                 "(bench.tls_ceiling)...")
        ceiling = await self.tls_ceiling(min(size, 512 * 2**20))
        mib = size / 2**20
        self.results["large_object"] = {
            "size_mib": mib,
            "raw_put_mib_s": mib / raw_put, "ingest_upload_mib_s": mib / ingest_put,
            "upload_ratio": raw_put / ingest_put,
            "raw_get_mib_s": raw_bytes / 2**20 / raw_get_s, "retrieve_download_mib_s": mib / dl_s,
            "download_ratio": (size / dl_s) / (raw_bytes / raw_get_s),
            "retrieve_plain_download_mib_s": mib / plain_s,
            # the same object straight from the S3 server by the same client as the downloads
            # (curl), plain and over HTTPS: what TLS alone costs (the target stays raw GET's)
            **curl_raw,
            **ceiling,
            "plain_download_ratio": (size / plain_s) / (raw_bytes / raw_get_s),
            "ingest_peak_rss_mib": ingest_rss, "retrieve_peak_rss_mib": retrieve_rss,
            # CPU the service spent per GiB moved: steadier than the rates on a busy machine
            "ingest_cpu_s_per_gib": ingest_cpu / (size / 2**30),
            "retrieve_cpu_s_per_gib": retrieve_cpu / (size / 2**30),
        }
        path.unlink()

    async def raw_get_curl(self, key: str, size: int) -> dict[str, float]:
        """MiB/s of ``curl`` fetching the stored object straight from the object store by a
        presigned URL: over plain HTTP, and over HTTPS from a second versitygw with TLS over
        the same data. The same client as the downloads through retrieve, no decryption, no
        service: the download rows against these say what secmsg adds and what TLS adds."""
        if not shutil.which("curl"):
            return {}
        from datetime import timedelta

        from minio import Minio

        async def fetch(endpoint: str, secure: bool) -> float | None:
            signer = Minio(endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY,
                           secure=secure, region="us-east-1")
            url = signer.presigned_get_object(self.blobs.bucket, key,
                                              expires=timedelta(minutes=10))
            t = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sSk", "-o", "/dev/null", "-w", "%{size_download}", url,
                stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            took = time.perf_counter() - t
            if proc.returncode != 0 or int(out or 0) < size:
                progress(f"raw GET with curl failed (exit {proc.returncode}, {out!r} bytes)")
                return None
            return int(out) / 2**20 / took

        progress("raw GET of the stored object with curl, plain HTTP...")
        rates: dict[str, float] = {}
        if (plain := await fetch(f"127.0.0.1:{self.stack.s3.port}", False)) is not None:
            rates["raw_get_curl_mib_s"] = plain
        port = free_port()
        s3 = make_s3(ensure_binaries()["versitygw"], port, self.stack.base,
                     self.base / "versitygw-tls.log", tls=ensure_cert(self.base / "tls"))
        progress("raw GET of the stored object with curl, HTTPS (versitygw with TLS)...")
        s3.start()
        try:
            if (tls := await fetch(f"127.0.0.1:{port}", True)) is not None:
                rates["raw_get_https_mib_s"] = tls
        finally:
            s3.stop()
        return rates

    async def tls_ceiling(self, size: int) -> dict[str, float]:
        """``bench.tls_ceiling --json``: the best HTTPS rate a bare uvloop TLS server reaches
        streaming bytes it holds in memory to curl (no object store, no decryption, no
        framework), and the same server over plain HTTP. No HTTPS download through any
        service on this machine beats the first."""
        if not shutil.which("curl"):
            return {}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.tls_ceiling", "--json", "--size", str(size >> 20),
            cwd=ROOT, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            progress(f"bench.tls_ceiling failed (exit {proc.returncode})")
            return {}
        got = json.loads(out)
        return {"tls_ceiling_mib_s": got["https_mib_s"],
                "tls_ceiling_plain_mib_s": got["plain_mib_s"]}

    async def download(self, url: str, token: str) -> int:
        """Bytes received. curl when present: a lean client, so the figure is the server's."""
        if shutil.which("curl"):
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sSk", "-o", "/dev/null", "-w", "%{size_download}",
                "-H", f"Authorization: Bearer {token}", url, stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            return int(out)
        got = 0
        async with httpx.AsyncClient(verify=False, timeout=3600) as web, web.stream(
                "GET", url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_raw(1 << 20):
                got += len(chunk)
        return got

    async def sign_in(self, web: httpx.AsyncClient, email: str) -> str:
        before = set(self.mail_dir.glob("*.eml"))
        r = await web.post("/v1/auth/code", json={"tenant_id": "bench", "email": email})
        assert r.status_code == 202, r.text
        import re

        for _ in range(300):
            for p in sorted(set(self.mail_dir.glob("*.eml")) - before):
                msg = message_from_bytes(p.read_bytes(), policy=default_policy)
                if msg["X-Secure-Message-Id"] or email not in str(msg["To"]):
                    continue
                body = msg.get_body(("plain",))
                m = re.search(r"\b(\d{8})\b", body.get_content() if body else "")
                if m:
                    r = await web.post("/v1/auth/session", json={
                        "tenant_id": "bench", "email": email, "code": m.group(1)})
                    assert r.status_code == 200, r.text
                    return str(r.json()["token"])
            await asyncio.sleep(0.1)
        raise RuntimeError("no sign-in code arrived")

    # -- many small messages: notify throughput and latency --------------------------------

    def notifications(self) -> dict[str, tuple[Path, int]]:
        """message id -> (file, capture time ns) for every captured notification.

        Incremental: each file is parsed once, so polling stays cheap and the load generator
        does not steal the CPU the services under test need."""
        cache: dict[str, tuple[str | None, int]] = self.__dict__.setdefault("_mail_cache", {})
        if not self.mail_dir.exists():
            return {}
        for entry in os.scandir(self.mail_dir):
            if entry.name in cache or not entry.name.endswith(".eml"):
                continue
            mid = None
            with open(entry.path, "rb") as f:
                for line in f:
                    if line in (b"\r\n", b"\n"):
                        break
                    if line.lower().startswith(b"x-secure-message-id:"):
                        mid = line.split(b":", 1)[1].strip().decode()
            cache[entry.name] = (mid, entry.stat().st_mtime_ns)
        return {mid: (self.mail_dir / name, t) for name, (mid, t) in cache.items() if mid}

    def _raw_submission(self, tag: str, i: int) -> bytes:
        """One small submission (the envelope part only) as the bytes of an HTTP/1.1 request."""
        env = json.dumps({"from": "alice@bench.example", "to": [f"{tag}-{i}@example.org"],
                          "subject": f"{tag} {i}", "text": "hello"}).encode()
        boundary = "secmsgbench7f3a"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n"
                "Content-Type: application/json\r\n\r\n").encode() + env + (
                    f"\r\n--{boundary}--\r\n").encode()
        port = self.procs["ingest"].port
        return (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {self.api_key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def submit_raw(self, n: int, tag: str, concurrency: int = 8
                         ) -> tuple[dict[str, float], list[float]]:
        """Like ``submit_many``, from a lean client: requests built beforehand, written on
        ``concurrency`` kept-alive connections (no HTTP library per request), so the figure is
        ingest's and not the client's -- httpx spent more CPU per request than ingest (2.5 vs
        1.3 ms measured), on the same two cores. Returns (message id -> submit time in ns,
        each request's time to its 202 in ms)."""
        requests = [self._raw_submission(tag, i) for i in range(n)]
        sent: dict[str, float] = {}
        took: list[float] = []

        async def connection(mine: list[bytes]) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.procs["ingest"].port)
            try:
                for request in mine:
                    t, t0 = time.time_ns(), time.perf_counter()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:]
                                  if b": " in line)
                    answer = await reader.readexactly(int(fields[b"content-length"]))
                    took.append((time.perf_counter() - t0) * 1000)
                    assert head.startswith(b"HTTP/1.1 202 "), head + answer
                    sent[json.loads(answer)["message_id"]] = t
                    if len(sent) % 200 == 0:
                        progress(f"  {tag}: {len(sent)}/{n} accepted")
            finally:
                writer.close()

        await asyncio.gather(*(connection(requests[k::concurrency]) for k in range(concurrency)))
        return sent, took

    async def submit_many(self, n: int, tag: str, concurrency: int = 8) -> dict[str, float]:
        sent: dict[str, float] = {}
        sem = asyncio.Semaphore(concurrency)
        url = self.procs["ingest"].base_url + "/v1/messages"
        async with httpx.AsyncClient(timeout=120,
                                     limits=httpx.Limits(max_connections=concurrency)) as http:
            async def one(i: int) -> None:
                env = json.dumps({"from": "alice@bench.example",
                                  "to": [f"{tag}-{i}@example.org"], "subject": f"{tag} {i}",
                                  "text": "hello"}).encode()
                async with sem:
                    t = time.time_ns()
                    r = await http.post(url, headers={"Authorization": f"Bearer {self.api_key}"},
                                        files=[("envelope", (None, env, "application/json"))])
                    assert r.status_code == 202, r.text
                    sent[r.json()["message_id"]] = t
                    if len(sent) % 200 == 0:
                        progress(f"  {tag}: {len(sent)}/{n} accepted")

            await asyncio.gather(*(one(i) for i in range(n)))
        return sent

    async def wait_notified(self, ids: set[str], timeout: float) -> dict[str, tuple[Path, int]]:
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            seen = self.notifications()
            done = ids & set(seen)
            if len(done) != last and len(done) % 100 == 0:
                progress(f"  notified {len(done)}/{len(ids)}")
                last = len(done)
            if done == ids:
                return seen
            await asyncio.sleep(0.1)
        raise RuntimeError(f"only {len(ids & set(self.notifications()))}/{len(ids)} notified")

    async def drain_backlog(self, n: int, replicas: int, tag: str, *, alone: bool = True
                            ) -> tuple[float, dict[str, tuple[Path, int]], float]:
        """Queue ``n`` messages with notify stopped, then let ``replicas`` notify processes
        drain them. Rate = notifications between the first and the last capture (process
        start-up excluded). ``alone``: store is paused while they drain (its
        ``notification.sent`` records wait in the stream), so notify shares the cores only
        with what the raw floor shares them with (nats-server, the SMTP sink); otherwise
        store records the deliveries at the same time. Returns (rate, captures, ingest
        msgs/s)."""
        self.procs["notify"].stop()
        progress(f"submitting {n} small messages with notify stopped...")
        timed = await self._timed_submit(n, tag)
        sent, ingest_rate = timed.pop("sent"), timed["ingest_msgs_s"]
        self.results.setdefault("ingest_rate", timed)
        while await self.db["messages"].count_documents({"_id": {"$in": list(sent)}}) < n:
            await asyncio.sleep(0.2)
        await self.consumer_idle(STORE_RECEIVED)  # every message.stored is out
        if alone:
            self.procs["store"].stop()
        progress(f"starting {replicas} notify replica(s) and timing the backlog"
                 f"{' (store paused)' if alone else ''}...")
        extra = [ServiceProc("notify", self.procs["notify"].env,
                             self.base / f"notify-{tag}-{i}.log", free_port())
                 for i in range(1, replicas)]
        for p in [self.procs["notify"], *extra]:
            p.start(timeout=60, wait=False)
        try:
            seen = await self.wait_notified(set(sent), timeout=900)
        finally:
            for p in extra:
                p.stop()
            if alone:
                self.procs["store"].start(timeout=60)
        await self.consumer_idle(STORE_DELIVERY)  # store has recorded them before what follows
        times = sorted(seen[m][1] for m in sent)
        rate = (n - 1) / max((times[-1] - times[0]) / 1e9, 1e-9)
        return rate, {m: seen[m] for m in sent}, ingest_rate

    async def ingest_rate(self, n: int) -> None:
        """``--only ingest``: the small-message rate, twice (notify stopped both times).
        First ingest alone -- store paused, the events wait in the stream -- which is what
        the floor (raw JetStream publishes, nothing consuming them) is measured against; then
        with store recording the events at the same time, as in production, where store
        competes for the same two cores."""
        self.procs["notify"].stop()
        await self.submit_raw(20, "warm")
        await self.consumer_idle(STORE_RECEIVED)
        self.procs["store"].stop()
        progress(f"submitting {n} small messages, store and notify stopped (ingest alone)...")
        spy = self.sampler("ingest")
        try:
            alone = await self._timed_submit(n, "alone")
        finally:
            self.stop_sampler(spy)
            self.procs["store"].start(timeout=60)
        alone.pop("sent")
        await self.consumer_idle(STORE_RECEIVED)
        progress(f"submitting {n} small messages with store recording them...")
        shared = await self._timed_submit(n, "rate")
        shared.pop("sent")
        await self.consumer_idle(STORE_RECEIVED)
        self.results["ingest_rate"] = {**alone, "with_store": shared}

    async def consumer_idle(self, durable: str, timeout: float = 300) -> None:
        """Wait until ``durable`` (a consumer of the events stream) has nothing pending and
        nothing unacknowledged: the service behind it has caught up."""
        import nats

        nc = await nats.connect(self.settings.nats_url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while True:
                info = await js.consumer_info(STREAM, durable)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{durable}: {info.num_pending} pending, "
                                       f"{info.num_ack_pending} unacknowledged after {timeout} s")
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def _timed_submit(self, n: int, tag: str) -> dict[str, Any]:
        """``submit_raw`` of ``n`` (8 connections): rate and ingest's CPU per message."""
        pid = self.procs["ingest"].proc.pid  # type: ignore[union-attr]
        cpu0, t = cpu_s(pid), time.perf_counter()
        sent, _ = await self.submit_raw(n, tag)
        rate = n / (time.perf_counter() - t)
        return {"messages": n, "ingest_msgs_s": rate, "sent": sent,
                "ingest_cpu_ms_per_msg": (cpu_s(pid) - cpu0) * 1000 / n}

    async def notify_throughput(self, n: int, replica_counts: tuple[int, ...]) -> None:
        """Notifications/s draining a backlog: notify alone (store paused) with each replica
        count, then one replica with store recording the deliveries at the same time; and
        the floor, raw aiosmtplib sending the same rendered mails to the same sink.

        The target row alternates: one replica alone, the floor, one replica alone again,
        the floor again -- the ratio is the mean rate over the mean floor, so a drift of the
        machine during the run moves both sides (a single floor taken minutes after the
        measurement swung the ratio 0.36-0.79 between runs on the same host)."""
        rates: dict[int, float] = {}
        seen: dict[str, tuple[Path, int]] = {}
        ingest_rate = 0.0
        first = replica_counts[0]
        alone: list[float] = []
        floors: list[float] = []
        for k in replica_counts:
            rate, captured, ir = await self.drain_backlog(n, k, f"tput{k}")
            rates[k] = rate
            progress(f"  {k} replica(s): {rate:.0f} notifications/s")
            if not seen:
                ingest_rate, seen = ir, captured
            if k == first:
                mails = [path.read_bytes() for path, _ in seen.values()]
                alone.append(rate)
                floors.append(await self.raw_smtp(mails))
                again, _, _ = await self.drain_backlog(n, k, f"tput{k}b")
                progress(f"  {k} replica(s), again: {again:.0f} notifications/s")
                alone.append(again)
                floors.append(await self.raw_smtp(mails))
                rates[k] = sum(alone) / len(alone)
        with_store, _, _ = await self.drain_backlog(n, 1, "tputstore", alone=False)
        progress(f"  1 replica, store recording: {with_store:.0f} notifications/s")
        raw_rate = sum(floors) / len(floors)
        self.results["notify_throughput"] = {
            "messages": n, "ingest_msgs_s": ingest_rate,
            "notify_msgs_s_by_replicas": {str(k): v for k, v in rates.items()},
            "notify_msgs_s_alone_runs": alone, "raw_aiosmtplib_runs": floors,
            "notify_msgs_s_with_store": with_store,
            "raw_aiosmtplib_msgs_s": raw_rate,
            "notify_ratio": rates[first] / raw_rate,
        }

    async def raw_smtp(self, mails: list[bytes]) -> float:
        """The floor: raw aiosmtplib sending ``mails`` (captured notifications) to the same
        sink over 4 connections; messages/s until the sink has written them all (it writes
        each before its 250, so the check after the sends normally passes at once)."""
        progress("raw aiosmtplib: the same rendered mails straight to the same sink (floor)...")
        import aiosmtplib

        before = len(list(self.mail_dir.glob("*.eml")))
        conns = 4

        async def sender(chunk: list[bytes]) -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port)
            await smtp.connect()
            for raw in chunk:
                await smtp.sendmail("bounce@bench.example", ["x@example.org"], raw)
            await smtp.quit()

        t = time.perf_counter()
        await asyncio.gather(*(sender(mails[i::conns]) for i in range(conns)))
        while len(list(self.mail_dir.glob("*.eml"))) < before + len(mails):
            await asyncio.sleep(0.01)
        rate = len(mails) / (time.perf_counter() - t)
        progress(f"  raw aiosmtplib: {rate:.0f} messages/s")
        return rate

    async def sequential_accept(self, n: int) -> None:
        """One client, one small message at a time: the time to 202 (issue 13: p50 <= 10 ms),
        from the lean client (the server's time); the same through httpx for comparison."""
        progress(f"sequential accept: {n} small messages, one at a time...")
        _, took = await self.submit_raw(n, "seq", concurrency=1)
        url = self.procs["ingest"].base_url + "/v1/messages"
        env = json.dumps({"from": "alice@bench.example", "to": ["seq@example.org"],
                          "subject": "seq", "text": "hello"}).encode()
        via_httpx: list[float] = []
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(n):
                t = time.perf_counter()
                r = await http.post(url, headers={"Authorization": f"Bearer {self.api_key}"},
                                    files=[("envelope", (None, env, "application/json"))])
                via_httpx.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 202, r.text
        took.sort()
        via_httpx.sort()
        self.results["sequential_accept"] = {
            "messages": n, "p50_ms": statistics.median(took),
            "p99_ms": took[min(n - 1, int(n * 0.99))],
            "httpx_p50_ms": statistics.median(via_httpx),
            "httpx_p99_ms": via_httpx[min(n - 1, int(n * 0.99))]}

    async def floors(self, n: int) -> None:
        """Floors with no secmsg code in the way: JetStream publish and AES-GCM in-process."""
        import nats
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from secmsg.shared import crypto

        progress(f"raw nats-py: {n} JetStream publishes, 8 in flight (floor for ingest)...")
        nc = await nats.connect(self.settings.nats_url)
        js = nc.jetstream()
        await js.add_stream(name="BENCHFLOOR", subjects=["benchfloor.>"])
        payload = b"x" * 600  # about the size of a message.received event
        sem = asyncio.Semaphore(8)

        async def pub(i: int) -> None:
            async with sem:
                await js.publish(f"benchfloor.{i % 16}", payload,
                                 headers={"Nats-Msg-Id": f"floor-{i}"})

        t = time.perf_counter()
        await asyncio.gather(*(pub(i) for i in range(n)))
        nats_rate = n / (time.perf_counter() - t)
        await js.delete_stream("BENCHFLOOR")
        await nc.close()

        progress("AES-256-GCM in-process: raw one-shot vs secmsg's segmented stream...")
        size = 256 << 20
        data = os.urandom(1 << 20) * 256
        key = crypto.new_data_key()
        aead = AESGCM(key)
        t = time.perf_counter()
        for i in range(0, size, 1 << 20):
            aead.encrypt(b"\0" * 12, data[i:i + (1 << 20)], None)
        raw_s = time.perf_counter() - t
        enc = crypto.SegmentEncryptor(key, "bench")
        t = time.perf_counter()
        for i in range(0, size, 64 << 10):  # ingest sees network-sized chunks
            enc.update(data[i:i + (64 << 10)])
        enc.finalize()
        seg_s = time.perf_counter() - t
        self.results["floors"] = {
            "nats_publish_msgs_s": nats_rate,
            "aesgcm_raw_mib_s": 256 / raw_s, "aesgcm_segmented_mib_s": 256 / seg_s,
        }

    async def latency(self, n: int) -> None:
        progress(f"end-to-end latency: {n} messages submitted at a steady pace...")
        sent: dict[str, float] = {}
        for i in range(0, n, 10):
            batch = await self.submit_many(min(10, n - i), f"lat{i}", concurrency=10)
            sent.update(batch)
            await asyncio.sleep(0.25)
        seen = await self.wait_notified(set(sent), timeout=600)
        lat_ms = sorted((seen[m][1] - t0) / 1e6 for m, t0 in sent.items())
        self.results["latency"] = {
            "messages": n, "p50_ms": statistics.median(lat_ms),
            "p99_ms": lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))],
            "max_ms": lat_ms[-1],
        }

    def chart(self, path: Path) -> None:
        """Ratios against their floors, and notify throughput by replica count, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        r = self.results
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        names, ratios = [], []
        if lo := r.get("large_object"):
            names += ["upload\n(ingest / raw PUT)", "download\n(retrieve / raw GET)"]
            ratios += [lo["upload_ratio"], lo["download_ratio"]]
        if nt := r.get("notify_throughput"):
            names.append("notify, 1 replica\n(/ raw aiosmtplib)")
            ratios.append(nt["notify_ratio"])
            by = nt["notify_msgs_s_by_replicas"]
            ks = sorted(by, key=int)
            right.plot([int(k) for k in ks], [by[k] for k in ks], marker="o")
            right.set_xticks([int(k) for k in ks])
            right.set_xlabel("notify replicas")
            right.set_ylabel("notifications / s")
            right.set_title("notify throughput by replica count")
            right.set_ylim(bottom=0)
        left.bar(names, ratios, color="#4a7bd0")
        left.axhline(0.5, color="#d04a4a", linestyle="--", label="target 0.5")
        left.set_ylabel("ratio to floor (same run)")
        left.set_title("secmsg vs its floors")
        left.legend()
        fig.suptitle(f"secmsg bench, {os.cpu_count()} CPUs")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def report(self) -> str:
        r = self.results
        lines = ["", "| figure | secmsg | floor (same run) | ratio | target |",
                 "|---|---|---|---|---|"]
        if lo := r.get("large_object"):
            lines += [
                f"| upload {lo['size_mib']:.0f} MiB through ingest | "
                f"{lo['ingest_upload_mib_s']:.0f} MiB/s | raw minio PUT "
                f"{lo['raw_put_mib_s']:.0f} MiB/s | {lo['upload_ratio']:.2f} | >= 0.8 |",
                f"| download {lo['size_mib']:.0f} MiB through retrieve (HTTPS, decrypt) | "
                f"{lo['retrieve_download_mib_s']:.0f} MiB/s | raw minio GET "
                f"{lo['raw_get_mib_s']:.0f} MiB/s | {lo['download_ratio']:.2f} | >= 0.5 |",
                f"| same, plain HTTP behind a TLS-terminating ingress | "
                f"{lo['retrieve_plain_download_mib_s']:.0f} MiB/s | raw minio GET "
                f"{lo['raw_get_mib_s']:.0f} MiB/s | {lo['plain_download_ratio']:.2f} | |",
                *([f"| same, plain HTTP / raw GET with curl | "
                   f"{lo['retrieve_plain_download_mib_s']:.0f} MiB/s | curl GET "
                   f"{lo['raw_get_curl_mib_s']:.0f} MiB/s | "
                   f"{lo['retrieve_plain_download_mib_s'] / lo['raw_get_curl_mib_s']:.2f} | |"]
                  if "raw_get_curl_mib_s" in lo else []),
                *([f"| HTTPS download / raw GET over HTTPS with curl (versitygw with TLS) | "
                   f"{lo['retrieve_download_mib_s']:.0f} MiB/s | curl HTTPS GET "
                   f"{lo['raw_get_https_mib_s']:.0f} MiB/s | "
                   f"{lo['retrieve_download_mib_s'] / lo['raw_get_https_mib_s']:.2f} | |"]
                  if "raw_get_https_mib_s" in lo else []),
                *([f"| what TLS alone allows: a bare TLS server streaming from memory to "
                   f"curl (bench.tls_ceiling; no S3, no decryption) | "
                   f"{lo['tls_ceiling_mib_s']:.0f} MiB/s | raw minio GET "
                   f"{lo['raw_get_mib_s']:.0f} MiB/s | "
                   f"{lo['tls_ceiling_mib_s'] / lo['raw_get_mib_s']:.2f} | |",
                   f"| HTTPS download / that ceiling | {lo['retrieve_download_mib_s']:.0f} MiB/s "
                   f"| bare TLS server {lo['tls_ceiling_mib_s']:.0f} MiB/s | "
                   f"{lo['retrieve_download_mib_s'] / lo['tls_ceiling_mib_s']:.2f} | |"]
                  if "tls_ceiling_mib_s" in lo else []),
                f"| ingest peak RSS during upload | {lo['ingest_peak_rss_mib']:.0f} MiB | | | "
                f"< 200 MiB |",
                f"| retrieve peak RSS during download | {lo['retrieve_peak_rss_mib']:.0f} MiB "
                f"| | | < 200 MiB |",
                f"| ingest CPU per GiB uploaded / retrieve CPU per GiB downloaded (HTTPS) | "
                f"{lo.get('ingest_cpu_s_per_gib', 0):.2f} s / "
                f"{lo.get('retrieve_cpu_s_per_gib', 0):.2f} s | | | |",
            ]
        if nt := r.get("notify_throughput"):
            by = nt["notify_msgs_s_by_replicas"]
            lines += [
                f"| notifications/s, 1 notify replica alone ({nt['messages']} msgs, store "
                f"paused; mean of two runs alternated with two floors"
                + (f": {' / '.join(f'{v:.0f}' for v in nt['notify_msgs_s_alone_runs'])} vs "
                   f"{' / '.join(f'{v:.0f}' for v in nt['raw_aiosmtplib_runs'])}"
                   if "raw_aiosmtplib_runs" in nt else "")
                + f") | {by['1']:.0f}/s | raw aiosmtplib "
                f"{nt['raw_aiosmtplib_msgs_s']:.0f}/s | {nt['notify_ratio']:.2f} | >= 0.5 |",
                *(f"| notifications/s, {k} notify replicas | {v:.0f}/s | | "
                  f"{v / by['1']:.2f} x 1 replica | |" for k, v in by.items() if k != "1"),
                *([f"| same, 1 replica, store recording the deliveries meanwhile | "
                   f"{nt['notify_msgs_s_with_store']:.0f}/s | raw aiosmtplib "
                   f"{nt['raw_aiosmtplib_msgs_s']:.0f}/s | "
                   f"{nt['notify_msgs_s_with_store'] / nt['raw_aiosmtplib_msgs_s']:.2f} | |"]
                  if "notify_msgs_s_with_store" in nt else []),
            ]
        if ir := r.get("ingest_rate"):
            lines.append(f"| ingest CPU per small message (8 connections) | "
                         f"{ir['ingest_cpu_ms_per_msg']:.2f} ms | | | |")
        if fl := r.get("floors"):
            ir = r.get("ingest_rate", {})
            floor = fl["nats_publish_msgs_s"]
            ws = ir.get("with_store")
            lines += [
                f"| ingest small messages/s alone (8 connections, store paused) vs raw "
                f"JetStream publish | {ir.get('ingest_msgs_s', 0):.0f}/s | raw nats-py publish "
                f"{floor:.0f}/s | {ir.get('ingest_msgs_s', 0) / floor:.2f} | >= 0.1 |",
                *([f"| same, store recording the events meanwhile | "
                   f"{ws['ingest_msgs_s']:.0f}/s ({ws['ingest_cpu_ms_per_msg']:.2f} CPU ms "
                   f"each) | raw nats-py publish {floor:.0f}/s | "
                   f"{ws['ingest_msgs_s'] / floor:.2f} | |"] if ws else []),
                f"| encryption in-process (64 KiB segments) | "
                f"{fl['aesgcm_segmented_mib_s']:.0f} MiB/s | raw AES-256-GCM "
                f"{fl['aesgcm_raw_mib_s']:.0f} MiB/s | "
                f"{fl['aesgcm_segmented_mib_s'] / fl['aesgcm_raw_mib_s']:.2f} | |",
            ]
        if sa := r.get("sequential_accept"):
            lines.append(f"| sequential accept, one client ({sa['messages']} msgs) | "
                         f"p50 {sa['p50_ms']:.1f} ms, p99 {sa['p99_ms']:.1f} ms (through "
                         f"httpx: p50 {sa['httpx_p50_ms']:.1f}, p99 {sa['httpx_p99_ms']:.1f}) "
                         "| | | p50 <= 10 ms |")
        if la := r.get("latency"):
            lines.append(f"| submit → SMTP accepted latency ({la['messages']} msgs) | "
                         f"p50 {la['p50_ms']:.0f} ms, p99 {la['p99_ms']:.0f} ms | | | |")
        return "\n".join(lines)


async def amain(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="secmsg-bench-"))
    bench = Bench(base, args.quick, profile=args.profile)
    try:
        await bench.setup()
        size = (args.size or (64 if args.quick else 1024)) * 2**20
        if args.only == "notify":
            await bench.notify_throughput(100 if args.quick else 1000, (1,))
        elif args.only == "ingest":
            await bench.ingest_rate(args.messages or (100 if args.quick else 1000))
            await bench.sequential_accept(50 if args.quick else 200)
            await bench.floors(1000 if args.quick else 5000)
        else:
            await bench.large_object(size)
        if args.only is None:
            # Latency first, on a quiet stack: after the throughput phases store still has
            # thousands of delivery events to record, which would be measured instead.
            await bench.latency(50 if args.quick else 200)
            await bench.ingest_rate(100 if args.quick else 1000)
            await bench.notify_throughput(100 if args.quick else 1000, (1, 2, 4))
            await bench.sequential_accept(50 if args.quick else 200)
            await bench.floors(1000 if args.quick else 5000)
    finally:
        bench.teardown()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    for prof in getattr(bench, "profiles", []):
        if prof.exists():
            shutil.copy(prof, path.with_name(f"{path.stem}-{prof.name}"))
    bench.results["machine"] = {"cpus": os.cpu_count(), "quick": args.quick}
    path.write_text(json.dumps(bench.results, indent=2))
    png = path.with_suffix(".png")
    bench.chart(png)
    print(bench.report())
    print(f"\nresults: {path}\nchart:   {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--only", choices=["io", "notify", "ingest"],
                    help="io: only the large-object figures (upload, download, peak RSS); "
                         "notify: only notifications/s of one replica vs raw aiosmtplib; "
                         "ingest: only the small-message ones (rate vs JetStream, sequential "
                         "accept)")
    ap.add_argument("--size", type=int, default=0,
                    help="large object in MiB (default 1024, --quick 64)")
    ap.add_argument("--messages", type=int, default=0,
                    help="--only ingest: small messages for the rate (default 1000, --quick "
                         "100); more gives a steadier figure and a longer profile")
    ap.add_argument("--profile", action="store_true",
                    help="sample ingest and retrieve with py-spy during the transfers "
                         "(with --only ingest: ingest during the small-message rate) "
                         "(collapsed stacks beside the results)")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
