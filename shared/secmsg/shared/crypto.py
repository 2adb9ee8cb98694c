"""Encryption at rest: segmented AES-256-GCM with per-object data keys, wrapped per tenant.

Storage format (version 1) -- this fixes what lies in the object store:

* Every object gets a fresh 256-bit data key (DEK). The DEK never leaves the process in
  clear; it is stored only wrapped (see ``KeyRing``) in the message record.
* The plaintext is cut into segments of ``segment_size`` bytes (the last one may be shorter,
  and an empty object is one empty segment). Segment ``i`` is sealed with AES-256-GCM:

      nonce = 4 zero bytes || i as 8-byte big-endian     (unique: the key is fresh per object)
      aad   = b"secmsg-seg-v1" || object_id || i (8 bytes) || final flag (1 byte)
      ct_i  = plaintext_i encrypted || 16-byte tag

  Segment ``i`` starts at ciphertext offset ``i * (segment_size + 16)``, so a byte range of
  plaintext maps to a byte range of ciphertext and only the segments it touches are read and
  decrypted. Binding the object id and index refuses a segment moved between objects or
  positions; the final flag refuses truncation at a segment boundary; GCM refuses any edit.

* Wrapping: tenant key-encryption keys (KEKs) come from a versioned platform keyring. The
  KEK for tenant *t* at version *v* is HKDF-SHA256(master_v, info="secmsg-tenant-kek-v1|t").
  A wrapped DEK is ``"<v>.<base64(nonce || AES-GCM(KEK, DEK, aad=tenant|object))>"``; a
  keyring keeps old versions so old objects still unwrap after a rotation.

* Per-tenant rotation: a tenant key also has a *generation* ``g`` (``tenants.key_generation``,
  0 until the tenant first rotates). Generation ``g > 0`` derives its KEK with
  info ``"secmsg-tenant-kek-v1|t|g<g>"`` and marks wrapped values ``"<v>-<g>.<...>"``, so a
  tenant can rotate on its own (new data keys wrap under the new generation, old ones still
  unwrap) and a re-wrap job (``KeyRing.rewrap``) moves old data keys to the new generation.
"""

from __future__ import annotations

import base64
import hmac
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secmsg.shared.errors import IntegrityError, InvalidInput

TAG_SIZE = 16
# Purpose labels bound (as AAD) into tenant secrets sealed with KeyRing.seal_secret.
SMTP_PASSWORD_PURPOSE = "smtp-password"  # noqa: S105 - a label, not a secret
DKIM_KEY_PURPOSE = "dkim-private-key"
TOTP_SECRET_PURPOSE = "totp-secret"  # noqa: S105 - a label, not a secret
DEFAULT_SEGMENT_SIZE = 64 * 1024
_SEG_AAD = b"secmsg-seg-v1"
_WRAP_AAD = b"secmsg-wrap-v1"
_SECRET_AAD = b"secmsg-secret-v1"
_HINT_SEP = "h"  # "<version>h<20 base64url chars>": URL-safe, no escaping in a query string


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", index)


def _aad(object_id: str, index: int, final: bool) -> bytes:
    return _SEG_AAD + object_id.encode() + struct.pack(">QB", index, 1 if final else 0)


def segment_count(plaintext_size: int, segment_size: int) -> int:
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(plaintext_size: int, segment_size: int) -> int:
    return plaintext_size + TAG_SIZE * segment_count(plaintext_size, segment_size)


class SegmentEncryptor:
    """Streams plaintext in, sealed segments out. Holds at most one segment in memory."""

    def __init__(self, data_key: bytes, object_id: str, segment_size: int = DEFAULT_SEGMENT_SIZE):
        self._aead = AESGCM(data_key)
        self._object_id = object_id
        self._segment_size = segment_size
        self._buf = bytearray()
        self._index = 0
        self.plaintext_size = 0
        self.finished = False

    def update(self, data: bytes) -> bytes:
        """Add plaintext; return the ciphertext of every segment now known not to be last."""
        self.plaintext_size += len(data)
        size = self._segment_size
        view = memoryview(data)
        parts = []
        pos = 0
        # Keep at least one byte back so the segment that turns out last gets the final flag.
        if self._buf:
            # Complete the leftover (< one segment) from the front of ``data``; the rest is
            # sealed straight from ``data``, never copied.
            pos = size - len(self._buf)
            if len(view) <= pos:
                self._buf += view
                return b""
            self._buf += view[:pos]
            parts.append(self._seal(self._buf, final=False))
            self._buf.clear()
        while len(view) - pos > size:
            parts.append(self._seal(view[pos:pos + size], final=False))
            pos += size
        self._buf += view[pos:]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finalize(self) -> bytes:
        if self.finished:
            raise RuntimeError("encryptor already finalized")
        self.finished = True
        last = self._seal(bytes(self._buf), final=True)
        self._buf.clear()
        return last

    def _seal(self, chunk: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        aad = _aad(self._object_id, self._index, final)
        ct = self._aead.encrypt(_nonce(self._index), chunk, aad)
        self._index += 1
        return ct


@dataclass(frozen=True)
class SegmentPlan:
    """Which ciphertext bytes to read to serve plaintext bytes ``start..end`` (inclusive)."""

    first_segment: int
    last_segment: int
    ct_start: int
    ct_end: int  # inclusive
    skip: int  # plaintext bytes to drop from the first decrypted segment
    length: int  # plaintext bytes to return


def plan_range(plaintext_size: int, segment_size: int, start: int, end: int) -> SegmentPlan:
    if plaintext_size == 0:
        total_ct = ciphertext_size(0, segment_size)
        return SegmentPlan(0, 0, 0, total_ct - 1, 0, 0)
    if not 0 <= start <= end < plaintext_size:
        raise InvalidInput(f"range {start}-{end} outside 0-{plaintext_size - 1}")
    first, last = start // segment_size, end // segment_size
    stride = segment_size + TAG_SIZE
    ct_end = min((last + 1) * stride, ciphertext_size(plaintext_size, segment_size)) - 1
    return SegmentPlan(first, last, first * stride, ct_end, start - first * segment_size,
                       end - start + 1)


class SegmentDecryptor:
    """Decrypts the ciphertext of a ``SegmentPlan`` fed in arbitrary chunks, in order."""

    def __init__(self, data_key: bytes, object_id: str, *, plaintext_size: int,
                 segment_size: int, plan: SegmentPlan):
        self._aead = AESGCM(data_key)
        self._object_id = object_id
        self._segment_size = segment_size
        self._count = segment_count(plaintext_size, segment_size)
        self._plan = plan
        self._index = plan.first_segment
        self._buf = bytearray()
        self._to_skip = plan.skip
        self._remaining = plan.length

    def _open(self, sealed: bytes | memoryview) -> bytes:
        final = self._index == self._count - 1
        try:
            pt = self._aead.decrypt(_nonce(self._index), sealed,
                                    _aad(self._object_id, self._index, final))
        except InvalidTag:
            raise IntegrityError(
                f"segment {self._index} of object {self._object_id} failed authentication"
            ) from None
        self._index += 1
        if self._to_skip:
            pt = pt[self._to_skip:]
            self._to_skip = 0
        pt = pt[: self._remaining]
        self._remaining -= len(pt)
        return pt

    def update(self, data: bytes) -> bytes:
        stride = self._segment_size + TAG_SIZE
        if self._buf:
            view = memoryview(bytes(self._buf) + data)  # leftover is < one sealed segment
            self._buf.clear()
        else:
            view = memoryview(data)
        parts = []
        pos = 0
        while len(view) - pos >= stride and self._index <= self._plan.last_segment:
            parts.append(self._open(view[pos:pos + stride]))
            pos += stride
        self._buf += view[pos:]
        return b"".join(parts)

    def finalize(self) -> bytes:
        out = b""
        if self._index <= self._plan.last_segment:
            if len(self._buf) < TAG_SIZE:
                raise IntegrityError(f"object {self._object_id} is truncated")
            out = self._open(bytes(self._buf))
            self._buf.clear()
        if self._index <= self._plan.last_segment or self._remaining or self._buf:
            raise IntegrityError(f"object {self._object_id} is truncated or has trailing data")
        return out


def encrypt_all(data_key: bytes, object_id: str, data: bytes,
                segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    enc = SegmentEncryptor(data_key, object_id, segment_size)
    return enc.update(data) + enc.finalize()


def decrypt_all(data_key: bytes, object_id: str, ciphertext: bytes, plaintext_size: int,
                segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    plan = plan_range(plaintext_size, segment_size, 0, max(plaintext_size - 1, 0))
    dec = SegmentDecryptor(data_key, object_id, plaintext_size=plaintext_size,
                           segment_size=segment_size, plan=plan)
    return dec.update(ciphertext) + dec.finalize()


def iter_decrypt(data_key: bytes, object_id: str, chunks: Iterator[bytes], *,
                 plaintext_size: int, segment_size: int, plan: SegmentPlan) -> Iterator[bytes]:
    dec = SegmentDecryptor(data_key, object_id, plaintext_size=plaintext_size,
                           segment_size=segment_size, plan=plan)
    for chunk in chunks:
        out = dec.update(chunk)
        if out:
            yield out
    last = dec.finalize()
    if last:
        yield last


class KeyRing:
    """Versioned platform master keys; derives per-tenant KEKs and (un)wraps data keys.

    Configured as ``"1:<base64 32 bytes>,2:<base64 32 bytes>"`` with an active version. New
    data keys are wrapped with the active version; any listed version still unwraps.
    """

    def __init__(self, keys: dict[int, bytes], active: int | None = None):
        if not keys:
            raise ValueError("keyring is empty")
        for version, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"keyring version {version} is not 32 bytes")
        self._keys = dict(keys)
        self._hint_keys: dict[tuple[str, int], bytes] = {}
        self._keks: dict[tuple[str, int, int], AESGCM] = {}
        self.active = active if active is not None else max(keys)
        if self.active not in self._keys:
            raise ValueError(f"active key version {self.active} is not in the keyring")

    @classmethod
    def parse(cls, spec: str, active: int | None = None) -> KeyRing:
        keys: dict[int, bytes] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            version, _, b64 = part.partition(":")
            try:
                keys[int(version)] = base64.b64decode(b64, validate=True)
            except ValueError as exc:
                raise ValueError(f"keyring entry {version!r} is not '<int>:<base64>'") from exc
        return cls(keys, active)

    @staticmethod
    def generate_spec(version: int = 1) -> str:
        return f"{version}:{base64.b64encode(os.urandom(32)).decode()}"

    def _kek(self, tenant_id: str, version: int, generation: int = 0) -> AESGCM:
        # cached: ingest wraps a data key for every object of every submission, and the HKDF
        # derivation cost more than the wrap itself (the master keys are in memory anyway)
        kek = self._keks.get((tenant_id, version, generation))
        if kek is not None:
            return kek
        try:
            master = self._keys[version]
        except KeyError:
            raise IntegrityError(f"key version {version} is not in the keyring") from None
        info = b"secmsg-tenant-kek-v1|" + tenant_id.encode()
        if generation:
            info += f"|g{generation}".encode()
        if len(self._keks) > 4096:
            self._keks.clear()
        kek = self._keks[(tenant_id, version, generation)] = AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master))
        return kek

    def _seal(self, tenant_id: str, aad: bytes, plaintext: bytes, generation: int = 0) -> str:
        if generation < 0:
            raise ValueError("key generation must be >= 0")
        nonce = os.urandom(12)
        sealed = self._kek(tenant_id, self.active, generation).encrypt(nonce, plaintext, aad)
        tag = f"{self.active}-{generation}" if generation else str(self.active)
        return f"{tag}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    @staticmethod
    def _parse_tag(token: str) -> tuple[int, int]:
        tag = token.partition(".")[0]
        version_s, _, generation_s = tag.partition("-")
        return int(version_s), int(generation_s or 0)

    def _open(self, tenant_id: str, aad: bytes, token: str, what: str) -> bytes:
        b64 = token.partition(".")[2]
        try:
            version, generation = self._parse_tag(token)
            raw = base64.urlsafe_b64decode(b64)
        except ValueError:
            raise IntegrityError(f"{what} is malformed") from None
        try:
            return self._kek(tenant_id, version, generation).decrypt(raw[:12], raw[12:], aad)
        except InvalidTag:
            raise IntegrityError(f"{what} does not belong to this tenant") from None

    def wrap(self, tenant_id: str, object_id: str, data_key: bytes, generation: int = 0) -> str:
        """Wrap a data key under the tenant's key of ``generation`` (``tenants.key_generation``)."""
        return self._seal(tenant_id, b"|".join((_WRAP_AAD, tenant_id.encode(),
                                                object_id.encode())), data_key, generation)

    def unwrap(self, tenant_id: str, object_id: str, wrapped: str) -> bytes:
        aad = b"|".join((_WRAP_AAD, tenant_id.encode(), object_id.encode()))
        return self._open(tenant_id, aad, wrapped, "wrapped key")

    def rewrap(self, tenant_id: str, object_id: str, wrapped: str, generation: int) -> str:
        """The same data key wrapped under the active master version and ``generation``
        (the per-tenant re-wrap job); the object's ciphertext does not change."""
        return self.wrap(tenant_id, object_id, self.unwrap(tenant_id, object_id, wrapped),
                         generation)

    def wrapped_version(self, wrapped: str) -> int:
        return self._parse_tag(wrapped)[0]

    def wrapped_generation(self, wrapped: str) -> int:
        return self._parse_tag(wrapped)[1]

    def _hint_key(self, tenant_id: str, version: int) -> bytes:
        # cached: notify derives it for every recipient of every notification
        key = self._hint_keys.get((tenant_id, version))
        if key is None:
            if len(self._hint_keys) > 4096:
                self._hint_keys.clear()
            key = self._hint_keys[(tenant_id, version)] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"secmsg-recipient-hint-v1|" + tenant_id.encode()).derive(self._keys[version])
        return key

    def recipient_hint(self, tenant_id: str, message_id: str, address: str) -> str:
        """A short keyed tag naming one recipient of one message, for the notification link
        (``?r=``): the link page can then offer "continue as p...@example.org" instead of asking
        for the address. It names, it does not authenticate -- the emailed code still does.
        Not reversible; ``match_recipient_hint`` finds it among the message's recipients."""
        return self._hint(tenant_id, self.active, message_id, address)

    def _hint(self, tenant_id: str, version: int, message_id: str, address: str) -> str:
        mac = hmac.new(self._hint_key(tenant_id, version),
                       f"{message_id}|{address.lower()}".encode(), "sha256").digest()
        return f"{version}{_HINT_SEP}{base64.urlsafe_b64encode(mac[:15]).decode()}"

    def match_recipient_hint(self, tenant_id: str, message_id: str, hint: str,
                             addresses: list[str]) -> str | None:
        """The address among ``addresses`` that ``hint`` names, or None (also for garbage)."""
        version_s, sep, _ = hint.partition(_HINT_SEP)
        if not sep or not version_s.isdigit() or int(version_s) not in self._keys:
            return None
        for address in addresses:
            if hmac.compare_digest(self._hint(tenant_id, int(version_s), message_id, address),
                                   hint):
                return address
        return None

    def seal_secret(self, tenant_id: str, purpose: str, secret: str) -> str:
        """Encrypt a small tenant secret (e.g. an SMTP password) for storage; same format as
        ``wrap``, with its own AAD domain so a sealed secret never opens as a data key.
        Sealed secrets stay on generation 0 (they are re-sealed when edited, not re-wrapped)."""
        aad = b"|".join((_SECRET_AAD, tenant_id.encode(), purpose.encode()))
        return self._seal(tenant_id, aad, secret.encode())

    def open_secret(self, tenant_id: str, purpose: str, sealed: str) -> str:
        aad = b"|".join((_SECRET_AAD, tenant_id.encode(), purpose.encode()))
        return self._open(tenant_id, aad, sealed, "sealed secret").decode()
