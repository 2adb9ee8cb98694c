"""Encryption at rest: segmented AES-256-GCM, range decryption, tamper detection, keyring."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secmsg.shared.crypto import (
    TAG_SIZE,
    KeyRing,
    SegmentEncryptor,
    ciphertext_size,
    decrypt_all,
    encrypt_all,
    iter_decrypt,
    new_data_key,
    plan_range,
)
from secmsg.shared.errors import IntegrityError

SEG = 1024  # small segments so tests cross many boundaries cheaply


def _range(key: bytes, oid: str, ct: bytes, size: int, start: int, end: int) -> bytes:
    plan = plan_range(size, SEG, start, end)
    chunk = ct[plan.ct_start: plan.ct_end + 1]
    # Feed in odd-sized pieces, as the network would.
    pieces = [chunk[i:i + 777] for i in range(0, len(chunk), 777)] or [b""]
    return b"".join(iter_decrypt(key, oid, iter(pieces), plaintext_size=size,
                                 segment_size=SEG, plan=plan))


@given(data=st.binary(max_size=5 * SEG + 3), feed=st.integers(1, 3000))
@settings(max_examples=150, deadline=None)
def test_round_trip_any_size_any_feed(data: bytes, feed: int) -> None:
    key = new_data_key()
    enc = SegmentEncryptor(key, "obj", SEG)
    ct = b"".join(enc.update(data[i:i + feed]) for i in range(0, len(data), feed))
    ct += enc.finalize()
    assert len(ct) == ciphertext_size(len(data), SEG)
    assert decrypt_all(key, "obj", ct, len(data), SEG) == data


@given(size=st.integers(1, 6 * SEG), a=st.integers(0, 10**6), b=st.integers(0, 10**6))
@settings(max_examples=200, deadline=None)
def test_any_range_decrypts_only_needed_segments(size: int, a: int, b: int) -> None:
    data = os.urandom(size)
    key = new_data_key()
    ct = encrypt_all(key, "obj", data, SEG)
    start, end = sorted((a % size, b % size))
    plan = plan_range(size, SEG, start, end)
    assert plan.ct_end - plan.ct_start + 1 <= (plan.last_segment - plan.first_segment + 1) * (
        SEG + TAG_SIZE)
    assert _range(key, "obj", ct, size, start, end) == data[start:end + 1]


def test_ciphertext_reveals_no_plaintext() -> None:
    data = b"TOP-SECRET-PATIENT-RECORD " * 500
    ct = encrypt_all(new_data_key(), "obj", data, SEG)
    assert b"TOP-SECRET" not in ct


def test_tampered_byte_is_refused() -> None:
    key, data = new_data_key(), os.urandom(3 * SEG)
    ct = bytearray(encrypt_all(key, "obj", data, SEG))
    ct[SEG + 40] ^= 1
    with pytest.raises(IntegrityError):
        decrypt_all(key, "obj", bytes(ct), len(data), SEG)


def test_truncation_at_segment_boundary_is_refused() -> None:
    key, data = new_data_key(), os.urandom(3 * SEG)
    ct = encrypt_all(key, "obj", data, SEG)
    cut = ct[: 2 * (SEG + TAG_SIZE)]  # drop the whole final segment
    with pytest.raises(IntegrityError):
        decrypt_all(key, "obj", cut, len(data), SEG)
    # Even if the attacker also lies about the size, the missing final flag gives it away.
    with pytest.raises(IntegrityError):
        decrypt_all(key, "obj", cut, 2 * SEG, SEG)


def test_reordered_segments_are_refused() -> None:
    key, data = new_data_key(), os.urandom(3 * SEG)
    ct = encrypt_all(key, "obj", data, SEG)
    s = SEG + TAG_SIZE
    swapped = ct[s:2 * s] + ct[:s] + ct[2 * s:]
    with pytest.raises(IntegrityError):
        decrypt_all(key, "obj", swapped, len(data), SEG)


def test_segment_bound_to_object_id() -> None:
    key, data = new_data_key(), os.urandom(SEG)
    ct = encrypt_all(key, "object-a", data, SEG)
    with pytest.raises(IntegrityError):
        decrypt_all(key, "object-b", ct, len(data), SEG)


def test_keyring_rotation_old_versions_still_unwrap() -> None:
    v1 = KeyRing.generate_spec(1)
    old = KeyRing.parse(v1)
    dek = new_data_key()
    wrapped_v1 = old.wrap("acme", "obj", dek)
    rotated = KeyRing.parse(v1 + "," + KeyRing.generate_spec(2))
    assert rotated.active == 2
    assert rotated.unwrap("acme", "obj", wrapped_v1) == dek
    wrapped_v2 = rotated.wrap("acme", "obj", dek)
    assert rotated.wrapped_version(wrapped_v2) == 2
    assert rotated.unwrap("acme", "obj", wrapped_v2) == dek
    with pytest.raises(IntegrityError):
        old.unwrap("acme", "obj", wrapped_v2)  # v2 unknown to the old ring


def test_wrapped_key_bound_to_tenant_and_object() -> None:
    ring = KeyRing.parse(KeyRing.generate_spec(1))
    wrapped = ring.wrap("acme", "obj", new_data_key())
    with pytest.raises(IntegrityError):
        ring.unwrap("other-tenant", "obj", wrapped)
    with pytest.raises(IntegrityError):
        ring.unwrap("acme", "other-obj", wrapped)


def test_keyring_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        KeyRing.parse("1:not-base64!")
    with pytest.raises(ValueError):
        KeyRing.parse("1:" + "QUJD")  # 3 bytes, not 32
    with pytest.raises(ValueError):
        KeyRing.parse(KeyRing.generate_spec(1), active=7)


def test_tenant_key_generations_rotate_per_tenant_and_rewrap() -> None:
    ring = KeyRing.parse(KeyRing.generate_spec(1))
    dek = new_data_key()
    old = ring.wrap("acme", "o1", dek)  # generation 0: the format before per-tenant rotation
    assert old.startswith("1.") and ring.wrapped_generation(old) == 0
    new = ring.wrap("acme", "o1", dek, generation=3)
    assert new.startswith("1-3.") and ring.wrapped_generation(new) == 3
    assert ring.wrapped_version(new) == 1
    # Different generations are different keys: the same ciphertext part does not open
    # under another generation's KEK.
    forged = "1-2." + new.partition(".")[2]
    with pytest.raises(IntegrityError):
        ring.unwrap("acme", "o1", forged)
    assert ring.unwrap("acme", "o1", old) == ring.unwrap("acme", "o1", new) == dek
    moved = ring.rewrap("acme", "o1", old, 4)
    assert ring.wrapped_generation(moved) == 4 and ring.unwrap("acme", "o1", moved) == dek
    with pytest.raises(IntegrityError):
        ring.unwrap("other", "o1", moved)


def test_recipient_hint_names_one_recipient_of_one_message() -> None:
    ring = KeyRing.parse(KeyRing.generate_spec(1))
    hint = ring.recipient_hint("acme", "m1", "Pat@Example.org")
    assert hint.startswith("1h") and len(hint) == 22 and "@" not in hint
    rcpts = ["bob@example.org", "pat@example.org"]
    assert ring.match_recipient_hint("acme", "m1", hint, rcpts) == "pat@example.org"
    assert ring.match_recipient_hint("acme", "m2", hint, rcpts) is None  # other message
    assert ring.match_recipient_hint("other", "m1", hint, rcpts) is None  # other tenant
    assert ring.match_recipient_hint("acme", "m1", hint, ["bob@example.org"]) is None
    for garbage in ("", "h", "9h" + hint[2:], "xh" + hint[2:], hint[:-1]):
        assert ring.match_recipient_hint("acme", "m1", garbage, rcpts) is None
    # still matches after a keyring rotation (old version kept)
    rotated = KeyRing.parse(",".join((KeyRing.generate_spec(2),)) + "," + "1:" +
                            __import__("base64").b64encode(ring._keys[1]).decode())
    assert rotated.match_recipient_hint("acme", "m1", hint, rcpts) == "pat@example.org"


def _reference_v1(key: bytes, oid: str, data: bytes, seg: int) -> bytes:
    """Storage format v1 written out from the module docstring, independently of the
    encryptor: what every object stored so far looks like."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    pieces = [data[i:i + seg] for i in range(0, len(data), seg)] or [b""]
    out = []
    for i, piece in enumerate(pieces):
        final = i == len(pieces) - 1
        nonce = b"\0\0\0\0" + i.to_bytes(8, "big")
        aad = b"secmsg-seg-v1" + oid.encode() + i.to_bytes(8, "big") + bytes([final])
        out.append(aead.encrypt(nonce, piece, aad))
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 7 * SEG + 5])
@pytest.mark.parametrize("feed", [1, 300, SEG, SEG + 1, 5000])
def test_storage_format_v1_unchanged(size: int, feed: int) -> None:
    """Objects stored before any change to the encryptor still decrypt, and new ones are
    byte-identical to the v1 format whatever sizes the plaintext arrives in."""
    key, oid = bytes(range(32)), "ab" * 16
    data = os.urandom(size)
    stored = _reference_v1(key, oid, data, SEG)
    enc = SegmentEncryptor(key, oid, SEG)
    produced = b"".join(enc.update(data[i:i + feed]) for i in range(0, size, feed))
    assert produced + enc.finalize() == stored
    assert decrypt_all(key, oid, stored, size, SEG) == data
    if size:
        assert _range(key, oid, stored, size, size // 3, size - 1) == data[size // 3:]
