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
import logging
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Annotated, Any, Protocol

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from secmsg.shared.crypto import DKIM_KEY_PURPOSE, KeyRing
from secmsg.shared.dnsnames import BlankIsNone, DnsPrefix, Fqdn, is_dns_name
from secmsg.shared.errors import SecmsgError

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Sender:
    """Whom one mail is from: the From address, the key that signs it (None: unsigned) and
    the envelope sender (MAIL FROM, what SPF checks)."""

    from_address: str
    key: DkimKey | None
    envelope_from: str


@dataclass(frozen=True)
class _TenantKey:
    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)


@dataclass
class MailIdentity:
    """The platform's mail identity (``PlatformMailSettings``), read and checked once, and the
    choice notify makes for each mail: a tenant with a usable key of its own (``tenants.dkim``)
    sends From its ``from_address``, signed with its key; any other mail is From the
    platform's sender and signed with the platform key. Used by retrieve (sign-in code mails)
    and ingest (the admin's SMTP test), so every mail the platform sends lines up alike."""

    platform_from: str
    key: PlatformKey | None = None
    bounce_address: str | None = None
    tenant_bounce_subdomain: str | None = None
    ehlo_name: str | None = None
    signer: DkimSigner = field(default_factory=DkimSigner)

    @classmethod
    def from_settings(cls, platform_from: str, mail: PlatformMailSettings | None = None,
                      *, service: str = "this service") -> MailIdentity:
        mail = mail or PlatformMailSettings()
        key = platform_key(mail)  # a broken key stops the start, not every mail
        if key is None:
            log.warning("no platform DKIM key (SECMSG_NOTIFY_DKIM_DOMAIN/_SELECTOR/"
                        "_PRIVATE_KEY_FILE): the mail %s sends goes out unsigned", service,
                        extra={"event": "startup"})
        return cls(platform_from=platform_from, key=key,
                   bounce_address=mail.bounce_address or None,
                   tenant_bounce_subdomain=mail.tenant_bounce_subdomain,
                   ehlo_name=mail.ehlo_name or default_ehlo_name(platform_from))

    def platform(self) -> Sender:
        return Sender(self.platform_from, self.key, self.bounce_address or self.platform_from)

    def tenant(self, key: DkimKey, from_address: str) -> Sender:
        envelope = self.bounce_address or from_address
        if self.bounce_address and self.tenant_bounce_subdomain:
            local = self.bounce_address.rpartition("@")[0]
            envelope = f"{local}@{self.tenant_bounce_subdomain}.{key.domain}"
        return Sender(from_address, key, envelope)

    def for_tenant(self, tenant_id: str, dkim_doc: Any, keyring: KeyRing) -> Sender:
        """``dkim_doc`` is the tenant's ``tenants.dkim`` (or None). A key that does not open
        or a From off the key's domain falls back to the platform's, as in notify."""
        if not isinstance(dkim_doc, dict):
            return self.platform()
        domain, selector = dkim_doc.get("domain"), dkim_doc.get("selector")
        sealed, from_address = dkim_doc.get("private_key_sealed"), dkim_doc.get("from_address")
        if not (isinstance(domain, str) and domain and isinstance(selector, str) and selector
                and isinstance(sealed, str) and isinstance(from_address, str)
                and parseaddr(from_address)[1].rpartition("@")[2].lower() == domain.lower()):
            return self.platform()
        try:
            pem = keyring.open_secret(tenant_id, DKIM_KEY_PURPOSE, sealed)
        except (SecmsgError, ValueError):
            log.warning("tenant DKIM key does not open", extra={"tenant_id": tenant_id})
            return self.platform()
        return self.tenant(_TenantKey(domain.lower(), selector, pem.encode()), from_address)

    def sign(self, message: bytes, sender: Sender) -> bytes:
        """``message`` signed with the sender's key (unchanged when it has none)."""
        return message if sender.key is None else self.signer.sign(message, sender.key)
