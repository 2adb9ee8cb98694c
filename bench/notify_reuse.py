"""Notifications per second through ONE notify replica: SMTP connection reuse vs a fresh
connection per message, side by side in one run against the same local SMTP sink.

    uv run python -m bench.notify_reuse            # 1,000 notifications per mode
    uv run python -m bench.notify_reuse --quick    # 200 per mode

Starts NATS and FerretDB (devstack), the SMTP sink as its own process, and notify as a
process (``SECMSG_NOTIFY_SMTP_REUSE`` true, then false). For each mode a backlog of N
``message.stored`` events (one recipient each) is published with notify stopped, then notify
is started; the rate counts from the first to the last capture at the sink (start-up
excluded). The per-target rate limit is off (``SECMSG_NOTIFY_TARGET_RATE_PER_S=0``) so the
connection cost is what is measured. Prints the ratio; writes ``bench/results/notify-reuse-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devstack.servers import free_port, start_stack, wait_port
from devstack.services import ServiceProc

ROOT = Path(__file__).resolve().parent.parent


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def capture_times(mail_dir: Path) -> list[int]:
    if not mail_dir.exists():
        return []
    return [e.stat().st_mtime_ns for e in os.scandir(mail_dir) if e.name.endswith(".eml")]


async def run_mode(env: dict[str, str], base: Path, mail_dir: Path, n: int, reuse: bool
                   ) -> float:
    from secmsg.shared import bus
    from secmsg.shared.events import MessageStored, Recipient, event_msg_id

    tag = "reuse" if reuse else "fresh"
    before = len(capture_times(mail_dir))
    nc = await bus.connect(env["SECMSG_NATS_URL"], f"bench-{tag}")
    await bus.ensure_stream(nc)
    pub = bus.EventPublisher(nc)
    progress(f"{tag}: publishing {n} message.stored events with notify stopped...")
    for i in range(n):
        ev = MessageStored(
            tenant_id="bench", message_id=uuid.uuid4().hex, sender="alice@bench.example",
            recipients=[Recipient(address=f"{tag}-{i}@example.org", kind="to")],
            subject=f"{tag} {i}", attachment_count=0,
            expires_at=datetime.now(UTC) + timedelta(days=30), disclaimer=None,
            received_at=datetime.now(UTC))
        await pub.publish(ev, event_msg_id(ev))
    await nc.close()
    proc = ServiceProc("notify", {**env, "SECMSG_NOTIFY_SMTP_REUSE": str(reuse).lower()},
                       base / f"notify-{tag}.log", free_port())
    progress(f"{tag}: starting notify and timing the backlog...")
    proc.start(timeout=60, wait=False)
    try:
        deadline = time.monotonic() + 600
        while len(capture_times(mail_dir)) < before + n:
            if time.monotonic() > deadline:
                raise RuntimeError("notifications did not all arrive")
            await asyncio.sleep(0.2)
    finally:
        proc.stop()
    times = sorted(capture_times(mail_dir))[before:]
    return (n - 1) / max((times[-1] - times[0]) / 1e9, 1e-9)


async def amain(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="secmsg-bench-reuse-"))
    n = 200 if args.quick else 1000
    progress("starting servers (NATS, FerretDB, versitygw) and the SMTP sink...")
    stack = start_stack(base / "servers")
    mail_dir = base / "mail"
    smtp_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "devstack.smtp_sink", "--port", str(smtp_port),
         "--dir", str(mail_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=ROOT)
    results: dict[str, object] = {}
    try:
        wait_port(smtp_port)
        env = {**stack.env(), "SECMSG_ENVIRONMENT": "test", "SECMSG_LOG_LEVEL": "WARNING",
               "SECMSG_MONGO_DB": "bench_reuse", "SECMSG_S3_BUCKET": "bench-reuse",
               "SECMSG_SMTP_HOST": "127.0.0.1", "SECMSG_SMTP_PORT": str(smtp_port),
               "SECMSG_SMTP_TLS": "none", "SECMSG_SMTP_FROM": "notify@bench.example",
               "SECMSG_NOTIFY_TARGET_RATE_PER_S": "0"}
        os.environ.update(env)
        rates = {}
        for reuse in (True, False):
            rates["reuse" if reuse else "fresh"] = await run_mode(env, base, mail_dir, n, reuse)
            progress(f"  {'reuse' if reuse else 'fresh'}: "
                     f"{rates['reuse' if reuse else 'fresh']:.0f} notifications/s")
        results = {"notifications_per_mode": n, "msgs_s_reuse": rates["reuse"],
                   "msgs_s_fresh_connection": rates["fresh"],
                   "ratio_reuse_over_fresh": rates["reuse"] / rates["fresh"],
                   "machine": {"cpus": os.cpu_count(), "quick": args.quick}}
    finally:
        sink.terminate()
        sink.wait(10)
        stack.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"notify-reuse-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"one notify replica, {n} notifications per mode, same sink:")
    print(f"  connection reuse      {results['msgs_s_reuse']:8.0f} /s")
    print(f"  connection per message{results['msgs_s_fresh_connection']:8.0f} /s")
    print(f"  ratio reuse / fresh   {results['ratio_reuse_over_fresh']:8.2f}")
    print(f"results: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 notifications per mode")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
