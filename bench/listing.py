"""What one listing page costs the database, at a few hundred and at thousands of messages.

    uv run python -m bench.listing                    # 100 and 5,000 messages
    uv run python -m bench.listing --sizes 100 5000 20000

Starts its own FerretDB (the SQLite backend, as the local stack and CI run it), and for each
size stores that many messages through store's own repository (``MongoMessageRepo.insert_many``:
the message documents and their ``mailbox`` listing entries, as the pipeline writes them; two
recipients each, one of them the reader, and the sender), then reads pages through the
services' own code and takes FerretDB's CPU time (``/proc``) per page:

* inbox, first page and a page after a cursor (retrieve ``MongoMessageRepo.list_live``:
  one ``_id`` range of ``mailbox``);
* sent list, first page (retrieve ``WebQueries.sent``: one ``_id`` range);
* for comparison, the inbox query before the listing index (a filter on ``tenant_id``,
  ``recipient_addresses``, ``state`` and expiry of ``messages``, sorted by ``received_at``).

On MongoDB every page is an index range scan of 20 entries, whatever the collection holds.
FerretDB 1.24 on SQLite pushes no range down (docs/cost.md): it decodes every document of the
collection it is asked about, so there a page grows with the collection -- this bench shows by
how much. Nothing in a test depends on these numbers. Writes
``bench/results/listing-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.cost import cpu_seconds
from bench.run import progress
from devstack.servers import Server, ensure_binaries, free_port
from secmsg.retrieve.adapters.mongo import MongoMessageRepo as Inbox
from secmsg.retrieve.web.queries import WebQueries
from secmsg.shared.documents import MailboxDoc, mailbox_key
from secmsg.store.adapters.mongo import MongoMessageRepo as Store

ROOT = Path(__file__).resolve().parent.parent
READER, SENDER = "reader@example.org", "sender@bench.example"
PAGE, REPEAT = 20, 5


def message(n: int, at: datetime) -> dict[str, Any]:
    other = f"r{n:06d}@example.org"
    return {"_id": uuid.uuid4().hex, "tenant_id": "bench", "sender": SENDER,
            "submitted_by": "api", "recipients": [{"address": READER, "kind": "to"},
                                                  {"address": other, "kind": "cc"}],
            "recipient_addresses": [READER, other], "subject": f"Message {n}",
            "objects": [], "inline": {}, "attachment_count": 0, "total_size": 900,
            "disclaimer": None, "expires_at": at + timedelta(days=30), "received_at": at,
            "stored_at": at, "state": "stored", "purged_at": None, "notify": True,
            "pad": "x" * 700}  # about the size of a small message's document


async def page_cost(pid: int, read: Callable[[], Awaitable[object]]) -> float:
    """FerretDB CPU ms per call, over ``REPEAT`` calls (CPU ticks are 10 ms)."""
    await read()
    before = cpu_seconds(pid)
    for _ in range(REPEAT):
        await read()
    return (cpu_seconds(pid) - before) * 1000 / REPEAT


async def measure(db: Any, pid: int, size: int) -> dict[str, Any]:
    inbox, web = Inbox(db), WebQueries(db)
    now = datetime.now(UTC)
    first = await inbox.list_live(tenant_id="bench", address=READER, now=now, limit=PAGE,
                                  after=None)
    cursor = mailbox_key(first[-1].received_at, first[-1].message_id)

    async def old_inbox() -> object:
        return await db["messages"].find(
            {"tenant_id": "bench", "recipient_addresses": READER, "state": "stored",
             "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]},
            sort=[("received_at", -1), ("_id", -1)], limit=PAGE).to_list(None)

    async def with_owner(address: str) -> object:
        # The same range plus equality on plain string fields, which FerretDB/SQLite pushes
        # down to SQLite (a json_each scan in C) so only the person's own entries are decoded.
        return await db["mailbox"].find(
            {"tenant_id": "bench", "box": "in", "address": address,
             "_id": MailboxDoc.key_range("bench", "in", address)},
            sort=[("_id", -1)], limit=PAGE).to_list(None)

    small = "r000001@example.org"  # a recipient with one message
    return {
        "messages": size,
        "range_plus_owner_fields_big_box": await page_cost(pid, lambda: with_owner(READER)),
        "range_small_box": await page_cost(pid, lambda: inbox.list_live(
            tenant_id="bench", address=small, now=now, limit=PAGE, after=None)),
        "range_plus_owner_fields_small_box": await page_cost(pid, lambda: with_owner(small)),
        "inbox_first_page": await page_cost(pid, lambda: inbox.list_live(
            tenant_id="bench", address=READER, now=now, limit=PAGE, after=None)),
        "inbox_next_page": await page_cost(pid, lambda: inbox.list_live(
            tenant_id="bench", address=READER, now=now, limit=PAGE, after=cursor)),
        "sent_first_page": await page_cost(pid, lambda: web.sent("bench", SENDER, PAGE)),
        "inbox_before_the_index": await page_cost(pid, old_inbox),
        "mailbox_entries": await db["mailbox"].count_documents({}),
    }


async def amain(sizes: list[int]) -> None:
    base = Path(tempfile.mkdtemp(prefix="secmsg-listing-"))
    port = free_port()
    (base / "db").mkdir()
    server = Server("ferretdb", [str(ensure_binaries()["ferretdb"]), "--handler=sqlite",
                                 f"--sqlite-url=file:{base / 'db'}/",
                                 f"--state-dir={base / 'db'}",
                                 f"--listen-addr=127.0.0.1:{port}", "--debug-addr=-",
                                 "--telemetry=disable", "--log-level=warn"],
                    port, base / "ferretdb.log")
    server.start()
    client: AsyncMongoClient[Any] = AsyncMongoClient(f"mongodb://127.0.0.1:{port}/",
                                                     tz_aware=True)
    db = client["bench"]
    pid = server.proc.pid  # type: ignore[union-attr]
    results: list[dict[str, Any]] = []
    try:
        store = Store(db)
        start = datetime.now(UTC) - timedelta(days=1)
        stored = 0
        for size in sorted(sizes):
            progress(f"storing messages {stored}..{size} through store's repository...")
            while stored < size:
                batch = [message(n, start + timedelta(seconds=n))
                         for n in range(stored, min(size, stored + 500))]
                await store.insert_many(batch)
                stored += len(batch)
            row = await measure(db, pid, size)
            results.append(row)
            progress(f"  {size}: {row}")
    finally:
        await client.close()
        server.stop()
    lines = ["", f"FerretDB CPU ms per listing page ({PAGE} messages), mean of {REPEAT}",
             "", "| messages stored | " + " | ".join(str(r["messages"]) for r in results)
             + " | growth |", "|---|" + "---|" * (len(results) + 1)]
    for key, label in (("inbox_first_page", "inbox, first page (`_id` range)"),
                       ("inbox_next_page", "inbox, page after a cursor (`_id` range)"),
                       ("sent_first_page", "sent list, first page (`_id` range)"),
                       ("inbox_before_the_index", "inbox before the index (field filter)"),
                       ("range_small_box", "inbox of a one-message box (`_id` range)"),
                       ("range_plus_owner_fields_big_box",
                        "`_id` range + tenant/box/address equality"),
                       ("range_plus_owner_fields_small_box",
                        "the same, one-message box")):
        vals = [r[key] for r in results]
        growth = f"{vals[-1] / vals[0]:.1f}x" if vals[0] else "-"
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals)
                     + f" | {growth} |")
    print("\n".join(lines))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"listing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"page": PAGE, "repeat": REPEAT, "cpus": os.cpu_count(),
                                "results": results}, indent=2))
    print(f"\nresults: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 5000],
                    help="numbers of stored messages to measure at (default 100 5000)")
    asyncio.run(amain(ap.parse_args().sizes))


if __name__ == "__main__":
    main()
