"""Small objects ride ``message.received`` encrypted (``inline``) instead of going to S3;
larger ones, and small ones past the message's inline budget, stream to S3 as before."""

from __future__ import annotations

import pytest

from secmsg.shared.crypto import ciphertext_size, decrypt_all
from tests.ingest.conftest import Ingest, att, env_part, envelope

# Segments of 1 KiB (FAST_ENV): a 4 KiB object spans several, so inline holds many segments.
INLINE_MAX = 4096
TOTAL_MAX = ciphertext_size(4096, 1024) + ciphertext_size(3000, 1024) + 200


@pytest.fixture
def ingest_env() -> dict[str, str]:
    return {"SECMSG_INGEST_INLINE_MAX_BYTES": str(INLINE_MAX),
            "SECMSG_INGEST_INLINE_TOTAL_MAX_BYTES": str(TOTAL_MAX)}


async def test_small_objects_inline_big_ones_and_past_the_budget_in_s3(ingest: Ingest) -> None:
    text = "hello bob " * 100  # 1,000 bytes
    contents = {"a.bin": b"a" * 4096, "b.bin": b"b" * 5000, "c.bin": b"c" * 3000,
                "d.bin": b"d" * 10}
    r = await ingest.post([env_part(envelope(text=text)),
                           *(att(n, c) for n, c in contents.items())])
    assert r.status_code == 202, r.text
    (ev,) = await ingest.events()
    by_name = {o.filename or o.role: o for o in ev.objects}
    # text (1,000) and a.bin (exactly the threshold) inline; b.bin over it; c.bin under it
    # but past the message's budget (text + a.bin leave no room); d.bin still fits.
    assert {n for n, o in by_name.items() if o.inline is not None} == {"text", "a.bin",
                                                                        "d.bin"}
    assert sorted(await ingest.keys()) == sorted([by_name["b.bin"].key, by_name["c.bin"].key])
    ring = ingest.settings.key_ring
    plain = {"text": text.encode(), **contents}
    for name, obj in by_name.items():
        stored = obj.inline if obj.inline is not None else await ingest.blobs.get_bytes(obj.key)
        assert len(stored) == ciphertext_size(obj.size, obj.segment_size)
        assert plain[name] not in stored, "stored as ciphertext"
        dek = ring.unwrap(ev.tenant_id, obj.object_id, obj.wrapped_key)
        assert decrypt_all(dek, obj.object_id, stored, obj.size, obj.segment_size) == plain[name]


async def test_a_refused_submission_leaves_nothing_of_its_inline_objects(ingest: Ingest) -> None:
    # The body is valid up to the second attachment, which breaks the tenant's limits.
    r = await ingest.post([env_part(envelope()), att("a.bin", b"a" * 100),
                           att("huge.bin", b"x" * (11 * 1024 * 1024))])
    assert r.status_code == 413, r.text
    await ingest.assert_nothing_stored()
