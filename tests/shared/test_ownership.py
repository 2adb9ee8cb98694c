"""One writer per MongoDB collection, readers through the typed views, and the table in
docs/design.md ("Who owns which collection") saying so -- checked against the source.

The scan (tests/shared/collection_access.py) resolves every collection through the constants
of ``secmsg.shared.mongo`` and follows the values through variables, attributes, helpers and
loops, so a write is found whatever it is called. It covers the product code: ``services/*``
and ``shared/``. Operator tools outside it (``ops/`` backup and restore, ``devstack/``) write
whole databases by design.
"""

from __future__ import annotations

import re
import textwrap
from functools import cache
from pathlib import Path

import pytest

from secmsg.shared import documents, mongo
from tests.shared.collection_access import Access, readers, scan, writers

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "store", "notify", "retrieve")


@cache
def _scan() -> tuple[Access, ...]:
    return tuple(scan(ROOT))


def _table() -> dict[str, tuple[str, set[str], str]]:
    """collection -> (owner, readers, how others learn), from docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("### Who owns which collection", 1)[1].split("The documents:", 1)[0]
    rows: dict[str, tuple[str, set[str], str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            found = set(re.findall(r"\b(ingest|store|notify|retrieve)\b", cells[2]))
            rows[cells[0].strip("`")] = (cells[1].strip("*"), found, cells[3])
    return rows


def test_every_collection_has_exactly_one_writer() -> None:
    accesses = _scan()
    unresolved = [a for a in accesses if a.collection == "?"]
    assert not unresolved, f"collections that do not resolve to a constant: {unresolved}"
    unknown = {a.collection for a in accesses} - set(mongo.COLLECTIONS)
    assert not unknown, f"collections missing from mongo.COLLECTIONS: {unknown}"
    several = {c: sorted(w) for c, w in writers(accesses).items() if len(w) > 1}
    assert not several, f"collections with more than one writer: {several}"
    assert "shared" not in {s for w in writers(accesses).values() for s in w}, \
        "shared/ writes a collection: only services own collections"


def test_the_design_table_names_each_owner_and_reader() -> None:
    accesses = _scan()
    table = _table()
    assert set(table) == set(mongo.COLLECTIONS), "one row per collection in mongo.COLLECTIONS"
    who_writes = writers(accesses)
    who_reads = readers(accesses)
    for collection, (owner, listed_readers, how) in table.items():
        assert owner in SERVICES, (collection, owner)
        assert who_writes.get(collection, {owner}) == {owner}, (collection, owner)
        assert listed_readers == who_reads.get(collection, set()) - {"shared"}, collection
        assert how, collection
    for view in documents.VIEWS:
        assert table[view.COLLECTION][0] == view.OWNER, view.__name__


def test_other_services_read_only_through_the_shared_views() -> None:
    """A service that does not own a collection touches it only through
    ``secmsg.shared.documents`` (the views' accessor is in shared/)."""
    owner = {c: row[0] for c, row in _table().items()}
    raw = sorted({(a.service, a.collection, a.where) for a in _scan()
                  if a.service in SERVICES and a.method != "view"
                  and owner.get(a.collection) != a.service})
    assert not raw, "raw reads of another service's collection:\n" + "\n".join(map(str, raw))


# --- the scan itself: it must see through names, helpers and loops -----------------------

def _with(files: dict[str, str]) -> list[Access]:
    return scan(ROOT, extra={k: textwrap.dedent(v) for k, v in files.items()})


SECOND_WRITERS = {
    "subscript through an alias and a helper": """
        from typing import Any
        from pymongo.asynchronous.database import AsyncDatabase
        from secmsg.shared import mongo

        THEIRS = mongo.MESSAGES

        async def _put(target: Any, doc: dict[str, Any]) -> None:
            await target.insert_one(doc)

        class Repo:
            def __init__(self, db: AsyncDatabase[Any]) -> None:
                self.anything = db[THEIRS]

            async def save(self, doc: dict[str, Any]) -> None:
                await _put(self.anything, doc)
        """,
    "imported name, get_collection, a loop": """
        from typing import Any
        from secmsg.shared.mongo import AUDIT, DELIVERY_STATUS

        async def wipe(db: Any) -> None:
            for name in (AUDIT, DELIVERY_STATUS):
                await db.get_collection(name).delete_many({})
        """,
    "an untyped database, a bulk write": """
        from secmsg.shared import mongo as m

        async def fix(handle) -> None:
            c = handle[m.KEY_ROTATIONS]
            await c.bulk_write([])
        """,
}


@pytest.mark.parametrize("source", SECOND_WRITERS.values(), ids=SECOND_WRITERS.keys())
def test_a_second_writer_is_found(source: str) -> None:
    """A write from notify to a collection store owns fails the rule, however it is spelled."""
    accesses = _with({"services/notify/secmsg/notify/sneaky.py": source})
    sneaky = {a.collection for a in accesses if a.write and "sneaky" in a.where}
    assert sneaky, "the scan did not see the write"
    several = {c for c, w in writers(accesses).items() if len(w) > 1}
    assert sneaky <= several


def test_a_collection_that_does_not_resolve_is_reported() -> None:
    accesses = _with({"services/notify/secmsg/notify/sneaky.py": """
        from typing import Any
        from pymongo.asynchronous.database import AsyncDatabase

        async def put(db: AsyncDatabase[Any], name: str) -> None:
            await db[name].insert_one({})
        """})
    assert [a.where for a in accesses if a.collection == "?"] == [
        "services/notify/secmsg/notify/sneaky.py:6"]


def test_reads_are_not_writes() -> None:
    accesses = _with({"services/notify/secmsg/notify/sneaky.py": """
        from typing import Any
        from secmsg.shared import mongo

        async def peek(db: Any) -> Any:
            return await db[mongo.ACCOUNTS].find_one({})
        """})
    mine = [a for a in accesses if "sneaky" in a.where]
    assert [(a.collection, a.write) for a in mine] == [("accounts", False)]
    assert "notify" not in writers(accesses)["accounts"]
