"""``python -m secmsg.store.deadletters list|show|replay|discard``: the operator's CLI.

Reads the same ``SECMSG_*`` settings as the services (MongoDB, and NATS for ``replay``).
Exit status 0 when done, 1 when refused (unknown id, replayed already, a dependency down),
2 for a usage error. docs/operations.md, "Dead letters", walks through it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from typing import Any

from nats.errors import Error as NatsError

from secmsg.shared import bus
from secmsg.shared.errors import SecmsgError
from secmsg.shared.mongo import make_client
from secmsg.shared.settings import CommonSettings
from secmsg.store import deadletters
from secmsg.store.adapters.mongo import MongoDeadLetterRepo


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m secmsg.store.deadletters",
                                description="List, inspect, replay or discard dead letters.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="dead letters, newest first")
    ls.add_argument("--service", help="only those written by this service (store, notify...)")
    ls.add_argument("--state", default="open", choices=[*deadletters.STATES, "all"])
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--after", help="the page after this id (the `next:` a list printed)")
    ls.add_argument("--json", action="store_true", help="one JSON document per line")
    show = sub.add_parser("show", help="one dead letter with its payload (JSON)")
    show.add_argument("id")
    rp = sub.add_parser("replay", help="publish the event again on its subject")
    rp.add_argument("id")
    rp.add_argument("--force", action="store_true", help="replay a replayed letter again")
    dc = sub.add_parser("discard", help="mark it discarded (kept, no longer counted)")
    dc.add_argument("id")
    dc.add_argument("--note", help="why (kept with the letter)")
    return p


def _line(s: dict[str, Any]) -> str:
    reason = (s["reason"] or "").replace("\n", " ")
    return (f"{s['id']}  {s['at']}  {s['state']:<9} {s['service'] or '-':<7} "
            f"{s['subject']}  x{s['deliveries'] or '?'}  {reason[:100]}")


async def run(args: argparse.Namespace, common: CommonSettings) -> int:
    client = make_client(common)
    repo = MongoDeadLetterRepo(client[common.mongo_db])
    by = f"cli:{getpass.getuser()}"
    try:
        if args.cmd == "list":
            state = None if args.state == "all" else args.state
            rows, nxt = await deadletters.list_letters(repo=repo, service=args.service,
                                                       state=state, limit=args.limit,
                                                       after=args.after)
            for row in rows:
                print(json.dumps(row) if args.json else _line(row))
            if not args.json:
                print(f"{len(rows)} dead letter(s)", file=sys.stderr)
            if nxt:
                print(f"next: {nxt} (--after {nxt})", file=sys.stderr)
        elif args.cmd == "show":
            print(json.dumps(await deadletters.show(repo=repo, letter_id=args.id), indent=2))
        elif args.cmd == "discard":
            done = await deadletters.discard(repo=repo, letter_id=args.id, by=by,
                                             note=args.note)
            print(json.dumps(done))
        else:
            from faststream.nats import NatsBroker

            broker = NatsBroker(bus.servers(common.nats_url), **bus.broker_options(common),
                                name="secmsg-deadletters",
                                connect_timeout=3, max_reconnect_attempts=1,
                                logger=logging.getLogger("secmsg.store.deadletters"))
            async with broker:
                done = await deadletters.replay(
                    repo=repo, publish=deadletters.broker_publisher(broker),
                    letter_id=args.id, by=by, force=args.force)
            print(json.dumps(done))
    except SecmsgError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except (NatsError, OSError, TimeoutError) as exc:
        print(f"error: NATS unavailable ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(run(args, CommonSettings()))


if __name__ == "__main__":
    sys.exit(main())
