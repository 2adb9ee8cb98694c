"""DKIM signing (RFC 6376) of the platform's outgoing mail -- notify's notifications and
retrieve's sign-in code mails -- with dkimpy, and the platform's mail identity both read.

dkimpy canonicalizes (relaxed/simple), hashes and writes the DKIM-Signature header; only the
RSA operation is done by ``cryptography`` (OpenSSL) with the key parsed once per key:
dkimpy's own pure-Python RSA costs ~5 ms of CPU per 2048-bit signature, which would cap a
replica at a few hundred notifications per second. Signatures are checked with
``dkim.verify`` in tests/notify/test_dkim.py, and every mail of the local stack is verified
against a loopback DNS server in tests/deliverability/test_local_stack_alignment.py.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from secmsg.shared.dnsnames import BlankIsNone, DnsPrefix, Fqdn, is_dns_name

# The headers the design names; one absent from a message (e.g. Cc) is still listed in h=,
# which signs its absence: nobody can add it later without breaking the signature.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
    b"content-type", b"reply-to", b"x-secure-message-id", b"x-secure-message-url",
    b"list-unsubscribe", b"list-unsubscribe-post")
_CACHE_SIZE = 256


class DkimKey(Protocol):
    """What signing needs of a key (notify's ``ports.DkimKey`` is one)."""

    @property
    def domain(self) -> str: ...
    @property
    def selector(self) -> str: ...
    @property
    def private_key_pem(self) -> bytes: ...


class PlatformMailSettings(BaseSettings):
    """The platform's mail identity, ``SECMSG_NOTIFY_*`` (where it was first documented):
    ``NotifySettings`` inherits these fields, and retrieve reads the same variables for its
    sign-in code mails, so both sign with the same key and use the same envelope sender and
    EHLO name."""

    model_config = SettingsConfigDict(env_prefix="SECMSG_NOTIFY_", extra="ignore")

    dkim_domain: str | None = Field(
        default=None, description="d= of the platform's DKIM signature (the platform "
                                  "sender's domain); with SELECTOR and PRIVATE_KEY_FILE. Also "
                                  "read by retrieve, which signs sign-in code mails the same way")
    dkim_selector: str | None = None
    dkim_private_key_file: str | None = Field(
        default=None, description="PEM RSA private key of the platform's DKIM signature; "
                                  "unset: notifications and code mails of tenants without "
                                  "their own key go out unsigned (warned at start)")
    bounce_address: str | None = Field(
        default=None, description="envelope sender base, e.g. bounces@notify.example: each "
                                  "notification's MAIL FROM becomes "
                                  "bounces+<tenant>.<message>.<hash>@notify.example, a code "
                                  "mail's the address itself; unset: the platform sender "
                                  "(SECMSG_SMTP_FROM)")
    tenant_bounce_subdomain: Annotated[DnsPrefix | None, BlankIsNone] = Field(
        default=None, description="with BOUNCE_ADDRESS, for a tenant with its own DKIM key: "
                                  "its envelope sender becomes <bounce local>+<tag>@<this>."
                                  "<tenant DKIM domain>, SPF-aligned with its From (the tenant "
                                  "publishes MX and SPF for that name first); unset: the "
                                  "platform bounce address for every tenant")
    ehlo_name: Annotated[Fqdn | None, BlankIsNone] = Field(
        default=None, description="the FQDN notify and retrieve give in EHLO/HELO (it should "
                                  "resolve to the sending IP and match its PTR); unset: the "
                                  "host's FQDN if it has a public-looking one, else the "
                                  "domain of SECMSG_SMTP_FROM")


_NOT_PUBLIC = ("localhost", ".localdomain", ".local", ".internal", ".lan")


def default_ehlo_name(platform_from: str, *, fqdn: str | None = None) -> str:
    """The host's fully qualified name when it has one worth showing (a dot, not a local-only
    name), else the platform sender's domain: never a bare host name such as a pod's."""
    name = (fqdn if fqdn is not None else socket.getfqdn()).lower().rstrip(".")
    if is_dns_name(name, min_labels=2) and not name.endswith(_NOT_PUBLIC):
        return name
    return platform_from.rpartition("@")[2].lower()


@dataclass(frozen=True)
class PlatformKey:
    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)


def platform_key(settings: PlatformMailSettings) -> PlatformKey | None:
    """The platform's DKIM key from ``settings`` (None when not configured); raises
    ValueError when configured but unusable, so a service fails at start, not per mail."""
    if not (settings.dkim_domain and settings.dkim_selector
            and settings.dkim_private_key_file):
        return None
    with open(settings.dkim_private_key_file, "rb") as f:
        key = PlatformKey(domain=settings.dkim_domain.lower(), selector=settings.dkim_selector,
                          private_key_pem=f.read())
    check_key(key)
    return key


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
    """Signs with a ``DkimKey``; the parsed key is cached by the PEM itself (a bytes key:
    Python keeps its hash, so the lookup for the same key object costs no hashing of the PEM
    per signature -- hashing it with sha256 was ~1.5% of notify's CPU)."""

    def __init__(self) -> None:
        self._keys: OrderedDict[bytes, rsa.RSAPrivateKey] = OrderedDict()

    def _key(self, pem: bytes) -> rsa.RSAPrivateKey:
        digest = bytes(pem)
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
