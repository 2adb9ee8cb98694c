"""Back up and restore secmsg's MongoDB database and S3 bucket over the wire.

    python -m secmsg.ops.backup dump DIR       # MongoDB first, then S3 (the same SECMSG_* env
    python -m secmsg.ops.backup verify DIR     #   as the services: SECMSG_MONGO_URL/_DB, S3_*)
    python -m secmsg.ops.backup restore DIR    # into an EMPTY database and bucket only

Works against any MongoDB wire server (FerretDB included, where ``mongodump`` may not exist)
and any S3 API. ``DIR`` holds:

* ``mongo/<collection>.bson`` -- the documents, concatenated BSON (mongodump's format) --
  and ``mongo/<collection>.indexes.json`` (the indexes, MongoDB Extended JSON);
* ``s3/<sha256 of the key>`` -- each object's bytes as stored: ciphertext, never plaintext
  (content is encrypted before it reaches S3);
* ``manifest.json`` -- what was dumped: counts, sizes, SHA-256 of every file, object keys and
  content types.

``restore`` checks every file against the manifest before it writes anything (a damaged or
incomplete backup changes nothing), refuses a database or bucket that already holds data, then
writes documents and objects and recreates the indexes. The keyring is NOT in the backup (it
would make the backup a copy of the plaintext): back it up separately, see docs/operations.md
("Backups"). Exit status: 0 done, 1 failed (servers), 2 refused (bad backup, target not empty).

Dump order matters for a consistent copy while the platform runs: ingest writes an object to
S3 before the message's record reaches MongoDB, so dumping MongoDB first and S3 second gives
every dumped record its objects (objects without a record are harmless: purged later).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import bson
from bson import json_util
from minio import Minio
from minio.error import S3Error
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from secmsg.shared.settings import CommonSettings

FORMAT = "secmsg-backup-1"
CHUNK = 1 << 20
# Index options MongoDB reports but does not take back in create_index.
_INDEX_READ_ONLY = {"v", "key", "ns"}


class Refused(Exception):
    """The backup cannot be used, or the target is not empty: nothing was written."""


@dataclass(frozen=True)
class Summary:
    documents: int
    collections: int
    objects: int
    bytes: int
    seconds: float


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def mongo_client(s: CommonSettings) -> MongoClient[dict[str, Any]]:
    return MongoClient(s.mongo_url, serverSelectionTimeoutMS=s.mongo_timeout_ms,
                       connectTimeoutMS=s.mongo_timeout_ms, tz_aware=True,
                       appname="secmsg-backup")


def s3_client(s: CommonSettings) -> Minio:
    return Minio(s.s3_endpoint, access_key=s.s3_access_key, secret_key=s.s3_secret_key,
                 secure=s.s3_secure, region=s.s3_region)


def dump(out: Path, s: CommonSettings) -> Summary:
    t0 = time.monotonic()
    if out.exists() and any(out.iterdir()):
        raise Refused(f"{out} is not empty")
    (out / "mongo").mkdir(parents=True, exist_ok=True)
    (out / "s3").mkdir(exist_ok=True)
    manifest: dict[str, Any] = {"format": FORMAT, "created": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mongo_db": s.mongo_db, "bucket": s.s3_bucket,
        "collections": {}, "objects": []}
    client = mongo_client(s)
    try:
        db = client[s.mongo_db]
        for name in sorted(db.list_collection_names()):
            path = out / "mongo" / f"{name}.bson"
            count = 0
            with path.open("wb") as f:
                for doc in db[name].find({}, sort=[("_id", 1)]):
                    f.write(bson.encode(doc))
                    count += 1
            indexes = [dict(ix) for ix in db[name].list_indexes() if ix["name"] != "_id_"]
            ix_path = out / "mongo" / f"{name}.indexes.json"
            ix_path.write_text(json_util.dumps(indexes, indent=1))
            manifest["collections"][name] = {
                "count": count, "sha256": _sha256_file(path),
                "indexes_sha256": _sha256_file(ix_path)}
    finally:
        client.close()
    s3 = s3_client(s)
    total = 0
    for obj in s3.list_objects(s.s3_bucket, recursive=True):
        key = str(obj.object_name)
        file = hashlib.sha256(key.encode()).hexdigest()
        h = hashlib.sha256()
        size = 0
        resp = s3.get_object(s.s3_bucket, key)
        try:
            with (out / "s3" / file).open("wb") as f:
                for block in resp.stream(CHUNK):
                    f.write(block)
                    h.update(block)
                    size += len(block)
            content_type = resp.headers.get("Content-Type", "application/octet-stream")
        finally:
            resp.close()
            resp.release_conn()
        total += size
        manifest["objects"].append({"key": key, "file": file, "size": size,
                                    "sha256": h.hexdigest(), "content_type": content_type})
    # The manifest last: a dump that died half-way has none and cannot be restored.
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    docs = sum(c["count"] for c in manifest["collections"].values())
    return Summary(docs, len(manifest["collections"]), len(manifest["objects"]), total,
                   time.monotonic() - t0)


def verify(src: Path) -> dict[str, Any]:
    """The manifest, once every file it names is present and intact (else Refused)."""
    try:
        manifest: dict[str, Any] = json.loads((src / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"{src}/manifest.json: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise Refused(f"{src}: not a {FORMAT} backup (format {manifest.get('format')!r})")
    for name, meta in manifest["collections"].items():
        for file, digest in ((f"{name}.bson", meta["sha256"]),
                             (f"{name}.indexes.json", meta["indexes_sha256"])):
            path = src / "mongo" / file
            if not path.is_file() or _sha256_file(path) != digest:
                raise Refused(f"{path}: missing or damaged (SHA-256 differs from the manifest)")
    for obj in manifest["objects"]:
        path = src / "s3" / obj["file"]
        if not path.is_file() or _sha256_file(path) != obj["sha256"]:
            raise Refused(f"{path} (object {obj['key']}): missing or damaged")
    return manifest


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        yield from bson.decode_file_iter(f)


def restore(src: Path, s: CommonSettings, batch: int = 500) -> Summary:
    t0 = time.monotonic()
    manifest = verify(src)
    client = mongo_client(s)
    s3 = s3_client(s)
    try:
        db = client[s.mongo_db]
        busy = [n for n in db.list_collection_names() if db[n].find_one({}, {"_id": 1})]
        if busy:
            raise Refused(f"database {s.mongo_db} is not empty ({', '.join(sorted(busy))}): "
                          "restore only into an empty database")
        if s3.bucket_exists(s.s3_bucket):
            if next(iter(s3.list_objects(s.s3_bucket, recursive=True)), None) is not None:
                raise Refused(f"bucket {s.s3_bucket} is not empty")
        else:
            s3.make_bucket(s.s3_bucket)
        # Objects first: a record restored without its object would be a broken message.
        for obj in manifest["objects"]:
            path: Path = src / "s3" / obj["file"]
            with path.open("rb") as f:
                body: BinaryIO = f
                s3.put_object(s.s3_bucket, obj["key"], body, obj["size"],
                              content_type=obj["content_type"])
        docs = 0
        for name in manifest["collections"]:
            pending: list[dict[str, Any]] = []
            for doc in _documents(src / "mongo" / f"{name}.bson"):
                pending.append(doc)
                if len(pending) >= batch:
                    db[name].insert_many(pending, ordered=True)
                    docs += len(pending)
                    pending = []
            if pending:
                db[name].insert_many(pending, ordered=True)
                docs += len(pending)
            indexes = json_util.loads((src / "mongo" / f"{name}.indexes.json").read_text())
            for ix in indexes:
                options = {k: v for k, v in ix.items() if k not in _INDEX_READ_ONLY}
                try:
                    db[name].create_index(list(ix["key"].items()), **options)
                except PyMongoError as exc:
                    # e.g. a TTL index FerretDB 1.x refuses: the services make theirs again at
                    # start-up (and `python -m secmsg.ops.migrate`), so say so and go on.
                    print(f"warning: index {name}.{ix['name']} not restored: {exc}",
                          file=sys.stderr)
    finally:
        client.close()
    return Summary(docs, len(manifest["collections"]), len(manifest["objects"]),
                   sum(int(o["size"]) for o in manifest["objects"]), time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m secmsg.ops.backup",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("dump", "verify", "restore"))
    ap.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.action == "verify":
            m = verify(args.dir)
            print(f"ok: {len(m['collections'])} collections, {len(m['objects'])} objects "
                  f"({m['created']})")
            return 0
        settings = CommonSettings()
        result = dump(args.dir, settings) if args.action == "dump" else restore(args.dir,
                                                                                  settings)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except (PyMongoError, S3Error, OSError) as exc:
        print(f"failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.action}: {result.documents} documents in {result.collections} collections, "
          f"{result.objects} objects ({result.bytes} bytes) in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
