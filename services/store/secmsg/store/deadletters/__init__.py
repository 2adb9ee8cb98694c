"""Dead letters: what operators do with events the workers gave up on.

Every worker appends to ``dead_letters`` (``secmsg.shared.worker``: the reason, subject,
stream sequence, delivery count and the full payload). Store owns the operations on them --
this module's functions, behind the CLI (``python -m secmsg.store.deadletters``) and the
platform operator's endpoints on store's internal port (``routes.py``):

* ``list_letters`` -- newest first (stream order), by service and state (``open``,
  ``replayed``, ``discarded``), a page at a time (``after`` = the previous page's ``next``);
* ``show`` -- one letter with its payload;
* ``replay`` -- publish the payload again, unchanged, on its original subject (and stream), with the
  ``Nats-Msg-Id`` ``<original>:replay:<n>`` (the original id would be dropped by the stream's
  duplicate window). The consumer handles it like any event -- handlers are idempotent, so an
  event that was half done completes; if it fails again it becomes a new dead letter. The
  letter is marked ``replayed`` (``replays``, ``replayed_at``, ``replayed_by``,
  ``replay_seq``);
* ``discard`` -- mark it ``discarded`` (kept for the record, counted no more).

Documents are never deleted here; a TTL or an archive job is the operator's choice.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from secmsg.shared import subjects
from secmsg.shared.errors import Conflict, InvalidInput, NotFound
from secmsg.store.ports import DeadLetterRepo, Doc, RawPublisher

STATES = ("open", "replayed", "discarded")
# What a letter id looks like (``<stream>:<sequence>``, ``<stream>:x<uuid>``, ``legacy:<hex>``)
_LETTER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}:[0-9A-Za-z]{1,64}")
MAX_LIST = 1000

OPEN = Gauge("secmsg_dead_letters",
             "Open dead letters (neither replayed nor discarded), by the service that wrote "
             "them; refreshed by store every SECMSG_STORE_DEAD_LETTERS_POLL_S",
             ["service"])


async def refresh_gauge(repo: DeadLetterRepo) -> dict[str, int]:
    """Set ``secmsg_dead_letters`` from the collection (a service back to none reads 0)."""
    counts = await repo.open_counts()
    for service in {*counts, *(labels[0] for labels in _seen)}:
        OPEN.labels(service).set(counts.get(service, 0))
        _seen.add((service,))
    return counts


_seen: set[tuple[str]] = set()


def summary(doc: Doc) -> dict[str, Any]:
    """A letter without its payload, JSON-ready."""
    at = doc.get("at")
    return {"id": str(doc["_id"]), "state": doc.get("state") or "open",
            "service": doc.get("service"), "consumer": doc.get("consumer"),
            "subject": doc.get("subject"), "stream": doc.get("stream"),
            "stream_seq": doc.get("stream_seq"), "msg_id": doc.get("msg_id"),
            "reason": doc.get("reason"), "error": doc.get("error"),
            "deliveries": doc.get("deliveries"),
            "size": doc.get("size", len(payload_of(doc))),
            "at": at.isoformat() if isinstance(at, datetime) else at,
            "replays": doc.get("replays", 0), "replay_seq": doc.get("replay_seq"),
            "replayed_by": doc.get("replayed_by"), "discarded_by": doc.get("discarded_by"),
            "note": doc.get("note")}


def payload_of(doc: Doc) -> bytes:
    payload = doc.get("payload")
    if isinstance(payload, bytes):
        return payload
    # Letters written before the full payload was kept have its first 512 characters only.
    return str(doc.get("head") or "").encode()


def detail(doc: Doc) -> dict[str, Any]:
    """A letter with its payload (text, and base64 for bytes that are not UTF-8)."""
    payload = payload_of(doc)
    return {**summary(doc), "payload": payload.decode("utf-8", "replace"),
            "payload_base64": base64.b64encode(payload).decode(),
            "payload_complete": isinstance(doc.get("payload"), bytes)}


def check_query(*, state: str | None, limit: int) -> None:
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")


async def list_letters(*, repo: DeadLetterRepo, service: str | None = None,
                       state: str | None = "open", limit: int = 100,
                       after: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of letters, newest first, and the ``after`` of the next page (None: the end).
    A page may hold fewer than ``limit`` and still have a next one (each request reads at
    most a few thousand letters, whatever the filter)."""
    check_query(state=state, limit=limit)
    if after is not None and not _LETTER_ID.fullmatch(after):
        raise InvalidInput("after must be a dead letter id, as `next` gave it")
    docs, nxt = await repo.find(service=service, state=state, limit=limit, after=after)
    return [summary(d) for d in docs], nxt


async def _get(repo: DeadLetterRepo, letter_id: str) -> Doc:
    if not letter_id or len(letter_id) > 200:
        raise InvalidInput("a dead letter id is required (at most 200 characters)")
    doc = await repo.get(letter_id)
    if doc is None:
        raise NotFound(f"no dead letter {letter_id!r}")
    return doc


async def show(*, repo: DeadLetterRepo, letter_id: str) -> dict[str, Any]:
    return detail(await _get(repo, letter_id))


async def replay(*, repo: DeadLetterRepo, publish: RawPublisher, letter_id: str, by: str,
                 force: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Publish the letter's payload again on its subject; mark it ``replayed``.

    An already replayed letter needs ``force`` (each replay is a new event for the consumer);
    a discarded one, or one without its full payload, cannot be replayed.
    """
    doc = await _get(repo, letter_id)
    state = doc.get("state") or "open"
    if state == "discarded":
        raise Conflict("this dead letter was discarded")
    if state == "replayed" and not force:
        raise Conflict("this dead letter was replayed already (force to replay it again)")
    if not isinstance(doc.get("payload"), bytes) or not doc.get("subject"):
        raise Conflict("this dead letter was recorded without its full payload and cannot "
                       "be replayed")
    n = int(doc.get("replays", 0)) + 1
    msg_id = f"{doc.get('msg_id') or doc['_id']}:replay:{n}"
    seq = await publish(str(doc["subject"]), doc["payload"], {"Nats-Msg-Id": msg_id},
                        str(doc.get("stream") or subjects.STREAM))
    fields = {"state": "replayed", "replays": n, "replayed_at": now or datetime.now(UTC),
              "replayed_by": by, "replay_seq": seq, "replay_msg_id": msg_id}
    await repo.update(str(doc["_id"]), fields)
    return summary({**doc, **fields})


async def discard(*, repo: DeadLetterRepo, letter_id: str, by: str, note: str | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    doc = await _get(repo, letter_id)
    if (doc.get("state") or "open") == "discarded":
        return summary(doc)
    if note is not None and len(note) > 500:
        raise InvalidInput("note: at most 500 characters")
    fields = {"state": "discarded", "discarded_at": now or datetime.now(UTC),
              "discarded_by": by, "note": note}
    await repo.update(str(doc["_id"]), fields)
    return summary({**doc, **fields})


def broker_publisher(broker: Any, *, timeout: float = 5.0) -> RawPublisher:
    """``RawPublisher`` through a connected FastStream ``NatsBroker`` (JetStream-acked)."""
    async def publish(subject: str, payload: bytes, headers: dict[str, str],
                      stream: str) -> int:
        ack = await broker.publish(payload, subject, headers=headers, stream=stream,
                                   timeout=timeout)
        return int(ack.seq)

    return publish
