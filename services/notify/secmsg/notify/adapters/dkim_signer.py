"""DKIM signing (RFC 6376) of the final notification bytes, with dkimpy.

dkimpy canonicalizes (relaxed/simple), hashes and writes the DKIM-Signature header; only the
RSA operation is done by ``cryptography`` (OpenSSL) with the key parsed once per key:
dkimpy's own pure-Python RSA costs ~5 ms of CPU per 2048-bit signature, which would cap a
replica at a few hundred notifications per second. Signatures are checked with
``dkim.verify`` in tests/notify/test_dkim.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from typing import Any

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from secmsg.notify.ports import DkimKey

# The headers the design names; one absent from a message (e.g. Cc) is still listed in h=,
# which signs its absence: nobody can add it later without breaking the signature.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
    b"content-type", b"reply-to", b"x-secure-message-id", b"x-secure-message-url",
    b"list-unsubscribe", b"list-unsubscribe-post")
_CACHE_SIZE = 256


class _OpenSslDKIM(dkim.DKIM):  # type: ignore[misc]  # dkim.DKIM is untyped (Any)
    """``dkim.DKIM`` whose header generation signs with an OpenSSL RSA key."""

    rsa_key: rsa.RSAPrivateKey

    def gen_header(self, fields: Any, include_headers: Any, canon_policy: Any,
                   header_name: bytes, pk: Any, standardize: bool = False) -> bytes:
        # dkimpy's gen_header (non-standardized form) with the RSA step replaced.
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        header = (header_name, b" " + header_value)
        h = hashlib.sha256()
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            h, canon_policy, headers, include_headers, header, dict(fields))
        sig = self.rsa_key.sign(h.digest(), padding.PKCS1v15(),
                                utils.Prehashed(hashes.SHA256()))
        idx = next(i for i, f in enumerate(fields) if f[0] == b"b")
        fields[idx] = (b"b", base64.b64encode(sig))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        folded: bytes = dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)
        return folded


class DkimSigner:
    """Signs with a ``DkimKey``; the parsed key is cached by the PEM's hash."""

    def __init__(self) -> None:
        self._keys: OrderedDict[bytes, rsa.RSAPrivateKey] = OrderedDict()

    def _key(self, pem: bytes) -> rsa.RSAPrivateKey:
        digest = hashlib.sha256(pem).digest()
        key = self._keys.get(digest)
        if key is None:
            loaded = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("DKIM key is not an RSA private key")
            key = self._keys[digest] = loaded
            while len(self._keys) > _CACHE_SIZE:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(digest)
        return key

    def sign(self, message: bytes, key: DkimKey) -> bytes:
        d = _OpenSslDKIM(message, signature_algorithm=b"rsa-sha256")
        d.rsa_key = self._key(key.private_key_pem)
        # dkimpy parses the PEM once more inside sign() (~0.1 ms) before our gen_header.
        header: bytes = d.sign(key.selector.encode(), key.domain.encode(), key.private_key_pem,
                        include_headers=list(SIGNED_HEADERS),
                        canonicalize=(b"relaxed", b"simple"))
        return header + message


def check_key(key: DkimKey) -> None:
    """Raise ValueError if ``key`` cannot sign (checked once at start for the platform's)."""
    DkimSigner()._key(key.private_key_pem)
