"""notify's own CPU per notification: one replica works a backlog of ``message.stored`` events.

    uv run python -m bench.notify_cpu                  # 600 events with 1 recipient, 200 with 3
    uv run python -m bench.notify_cpu --events 200     # quicker
    uv run python -m bench.notify_cpu --profile        # and a py-spy profile (if installed)
    uv run python -m bench.notify_cpu --dkim           # with a platform DKIM key (2048-bit RSA)

Starts NATS and FerretDB (devstack), the SMTP sink as its own process and notify as a
process; notify is started and ready before the backlog is published, so its start-up is not
counted. For each phase: notify's CPU time (``/proc/<pid>/stat`` user + system) from just
before the backlog to the last capture at the sink, divided by the notifications (and by the
events), and the rate from the first to the last capture. bench.cost measures the whole
pipeline; this isolates notify, whose share is per notification. CPU ticks are 10 ms: use a
few hundred notifications per phase. ``--dkim`` gives notify a platform DKIM key, as in
production (bench.cost runs without one, so its notify figure has no signing).
``--profile`` samples notify with py-spy (``py-spy record --format raw``) during the phases
and prints the functions with the most samples.
Writes ``bench/results/notify-cpu-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.servers import free_port, start_stack, wait_port
from devstack.services import ServiceProc

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def syscalls(pid: int) -> tuple[int, int]:
    """(read, write) system calls of the process so far (``/proc/<pid>/io``): each socket
    write to NATS or the SMTP server is one, so their count per notification is exact where
    CPU time is noisy."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["syscr"]), int(io["syscw"])


def captures(mail_dir: Path) -> list[int]:
    if not mail_dir.exists():
        return []
    return [e.stat().st_mtime_ns for e in os.scandir(mail_dir) if e.name.endswith(".eml")]


async def phase(env: dict[str, str], pid: int, mail_dir: Path, events: int,
                recipients: int) -> dict[str, Any]:
    from secmsg.shared import bus
    from secmsg.shared.events import MessageStored, Recipient, event_msg_id

    tag = f"r{recipients}"
    nc = await bus.connect(env["SECMSG_NATS_URL"], f"bench-{tag}")
    pub = bus.EventPublisher(nc)
    backlog = [MessageStored(
        tenant_id="bench", message_id=uuid.uuid4().hex, sender="alice@bench.example",
        recipients=[Recipient(address=f"{tag}-{i}-{r}@example.org", kind="to")
                    for r in range(recipients)],
        subject=f"{tag} {i}", attachment_count=1,
        expires_at=datetime.now(UTC) + timedelta(days=30), disclaimer="Confidential",
        received_at=datetime.now(UTC)) for i in range(events)]
    want = len(captures(mail_dir)) + events * recipients
    progress(f"{tag}: {events} events x {recipients} recipient(s)...")
    cpu0, (r0, w0) = cpu_seconds(pid), syscalls(pid)
    await asyncio.gather(*(pub.publish(ev, event_msg_id(ev)) for ev in backlog))
    await nc.close()
    deadline = time.monotonic() + 600
    while len(captures(mail_dir)) < want:
        if time.monotonic() > deadline:
            raise RuntimeError("notifications did not all arrive")
        await asyncio.sleep(0.1)
    cpu = cpu_seconds(pid) - cpu0
    r1, w1 = syscalls(pid)
    times = sorted(captures(mail_dir))[-events * recipients:]
    n = events * recipients
    return {"events": events, "recipients": recipients, "notifications": n,
            "cpu_s": cpu, "cpu_ms_per_notification": cpu * 1000 / n,
            "cpu_ms_per_event": cpu * 1000 / events,
            "reads_per_notification": (r1 - r0) / n, "writes_per_notification": (w1 - w0) / n,
            "notifications_per_s": (n - 1) / max((times[-1] - times[0]) / 1e9, 1e-9)}


def top_functions(raw: Path, limit: int = 25) -> list[tuple[float, str]]:
    """Inclusive share of samples per function from py-spy's raw (collapsed) output."""
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            incl[frame.split(":")[0]] += n
    return [(v * 100 / max(total, 1), k) for k, v in incl.most_common(limit)]


async def amain(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="secmsg-bench-notify-cpu-"))
    progress("starting servers (NATS, FerretDB) and the SMTP sink...")
    stack = start_stack(base / "servers")
    mail_dir = base / "mail"
    smtp_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "devstack.smtp_sink", "--port", str(smtp_port),
         "--dir", str(mail_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=ROOT)
    spy: subprocess.Popen[bytes] | None = None
    raw = base / "notify.pyspy.txt"
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    proc: ServiceProc | None = None
    try:
        wait_port(smtp_port)
        env = {**stack.env(), "SECMSG_ENVIRONMENT": "test", "SECMSG_LOG_LEVEL": "WARNING",
               "SECMSG_MONGO_DB": "bench_notify_cpu", "SECMSG_S3_BUCKET": "bench-notify-cpu",
               "SECMSG_SMTP_HOST": "127.0.0.1", "SECMSG_SMTP_PORT": str(smtp_port),
               "SECMSG_SMTP_TLS": "none", "SECMSG_SMTP_FROM": "notify@bench.example",
               "SECMSG_NOTIFY_TARGET_RATE_PER_S": "0"}
        if args.dkim:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
            (base / "dkim.pem").write_bytes(pem)
            env.update({"SECMSG_NOTIFY_DKIM_DOMAIN": "bench.example",
                        "SECMSG_NOTIFY_DKIM_SELECTOR": "s1",
                        "SECMSG_NOTIFY_DKIM_PRIVATE_KEY_FILE": str(base / "dkim.pem")})
        results["dkim"] = args.dkim
        os.environ.update(env)
        from secmsg.shared import bus

        nc = await bus.connect(env["SECMSG_NATS_URL"], "bench-setup")
        await bus.ensure_stream(nc)
        await nc.close()
        proc = ServiceProc("notify", env, base / "notify.log", free_port())
        proc.start(timeout=60)
        pid = proc.proc.pid  # type: ignore[union-attr]
        if args.profile:
            exe = shutil.which("py-spy")
            if exe is None:
                progress("py-spy not found: no profile")
            else:
                spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200",
                                        "--nonblocking", "--format", "raw", "-o", str(raw)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await phase(env, pid, mail_dir, 20, 1)  # warm-up: connections, caches, consumers
        results["phases"] = [await phase(env, pid, mail_dir, args.events, 1),
                             await phase(env, pid, mail_dir, max(1, args.events // 3), 3)]
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        if proc is not None:
            proc.stop()
        sink.terminate()
        sink.wait(10)
        stack.stop()
    print("\none notify replica, a backlog published while it runs (start-up excluded), "
          f"DKIM {'on' if args.dkim else 'off'}:")
    print("| recipients per event | notifications | CPU ms / notification | CPU ms / event "
          "| notifications/s | reads / writes per notification |")
    print("|---|---|---|---|---|---|")
    for p in results["phases"]:
        print(f"| {p['recipients']} | {p['notifications']} | {p['cpu_ms_per_notification']:.2f} "
              f"| {p['cpu_ms_per_event']:.2f} | {p['notifications_per_s']:.0f} "
              f"| {p['reads_per_notification']:.1f} / {p['writes_per_notification']:.1f} |")
    if spy is not None and raw.exists():
        results["profile_top"] = top_functions(raw)
        print("\npy-spy, inclusive share of notify's samples:")
        for share, fn in results["profile_top"]:
            print(f"  {share:5.1f}%  {fn}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"notify-cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=600,
                    help="events with one recipient (a third as many with three)")
    ap.add_argument("--profile", action="store_true", help="sample notify with py-spy")
    ap.add_argument("--dkim", action="store_true", help="sign with a platform DKIM key")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
