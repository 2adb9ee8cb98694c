"""Bring MongoDB, NATS and S3 up to what this release needs, before its pods roll out.

    python -m secmsg.ops.migrate            # the same SECMSG_* env as the services

Runs the services' own set-up functions (the one place each is defined), so it does exactly
what the new pods would do at start-up, once, before them, and with its outcome visible as a
Job's status instead of as slow or failing start-ups across every replica:

* the MongoDB indexes of ingest, store and retrieve (``ensure_indexes``: creates missing ones;
  existing ones are kept), and the few a release retired are dropped by name (store's
  ``RETIRED_MESSAGE_INDEXES``: indexes nothing reads through any more, which every insert
  still paid for; an index an operator added under another name is never touched);
* the listing entries (``mailbox``) of messages recorded before that collection existed, so
  the inbox and sent lists, which page by its ``_id`` ranges, still show them (store's
  ``backfill_mailbox``; entries already there are left as they are);
* the expiry buckets (``expiry_buckets``) of messages recorded before they existed, so the
  expiry purge, which reads only those by ``_id``, still finds them (store's
  ``backfill_expiry_buckets``: ids already filed stay once; an expiry already past is filed
  under the current minute). Run it again after the rollout if store replicas of the
  release before kept recording during it: the messages they recorded have no bucket;
* audit documents written before ``_id``s were tenant- and time-first get them (the admin
  export reads ``_id`` ranges), and every ``message.opened`` on file sets its read mark on the
  reader's ``mailbox`` entry; dead letters get their padded ``<stream>:<seq>`` ``_id``
  (their list pages by it) -- store's ``migrate_ids``;
* the JetStream stream ``SECMSG`` and notify's retry stream: created, or the settings this
  release depends on updated in place, replicas only ever raised (``bus.ensure_stream``);
* the S3 bucket.

Idempotent: running it twice, or a service starting alongside, is harmless. Exit 0 when all
of it is done, 1 (with the failing step named) otherwise. Kubernetes: the Job
``secmsg-migrate`` (deploy/k8s/base/migrate-job.yaml); docs/operations.md, "Upgrades".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from secmsg.ingest.adapters.mongo import ensure_indexes as ingest_indexes
from secmsg.ingest.settings import IngestSettings
from secmsg.notify import retry
from secmsg.notify.settings import NotifySettings
from secmsg.retrieve.adapters.mongo import ensure_indexes as retrieve_indexes
from secmsg.shared import bus, mongo
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings
from secmsg.store.adapters.mongo import (
    MongoAuditRepo,
    MongoDeadLetterRepo,
    MongoMessageRepo,
    drop_retired_indexes,
)
from secmsg.store.adapters.mongo import ensure_indexes as store_indexes


async def _drop_retired(db: Any, say: Callable[[str], None]) -> None:
    for name in await drop_retired_indexes(db):
        say(f"  dropped {name}")


async def migrate(common: CommonSettings, say: Callable[[str], None] = print) -> None:
    ingest, notify = IngestSettings(), NotifySettings()
    client = mongo.make_client(common)
    db = client[common.mongo_db]
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("ingest indexes", lambda: ingest_indexes(db,
                                                  idempotency_ttl_s=ingest.idempotency_ttl_s)),
        ("store indexes", lambda: store_indexes(db)),
        ("retrieve indexes", lambda: retrieve_indexes(db)),
        ("retired indexes", lambda: _drop_retired(db, say)),
        ("mailbox entries", lambda: MongoMessageRepo(db).backfill_mailbox()),
        ("expiry buckets", lambda: MongoMessageRepo(db).backfill_expiry_buckets()),
        ("audit ids and read marks",
         lambda: MongoAuditRepo(db).migrate_ids(MongoMessageRepo(db))),
        ("dead-letter ids", lambda: MongoDeadLetterRepo(db).migrate_ids()),
    ]
    try:
        for name, step in steps:
            say(f"{name} ...")
            await step()
        say("streams ...")
        nc = await bus.connect(common.nats_url, "secmsg-migrate",
                               **bus.connect_options(common))
        try:
            await bus.ensure_stream(nc, replicas=common.nats_stream_replicas)
            await bus.ensure_stream(nc, replicas=common.nats_stream_replicas,
                                    config=retry.stream_config(max_age_s=(
                                        notify.give_up_after_s + notify.retry_max_s + 86400)))
        finally:
            await nc.close()
        say("bucket ...")
        await S3BlobStore.from_settings(common).ensure_bucket()
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m secmsg.ops.migrate",
                            description=__doc__.split("\n\n")[0]).parse_args(argv)
    try:
        asyncio.run(migrate(CommonSettings()))
    except Exception as exc:  # the Job's log names what failed; the status says it did
        print(f"migrate failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    print("migrate: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
