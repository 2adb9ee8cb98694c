"""The local stack's mail identity: a platform DKIM key made once in ``.run/dkim/`` (so what a
developer sees in ``.run/mail/`` is signed as production mail is), the aligned bounce address,
and the DNS records a real deployment would publish for them (``.run/dkim/records.txt``; the
local stack itself has no DNS: tests/deploy/test_local_stack_mail.py serves these records from
a loopback DNS server and verifies every notification against them)."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PLATFORM_FROM = "notifications@secmsg.localhost"  # CommonSettings' default SECMSG_SMTP_FROM
PLATFORM_DOMAIN = PLATFORM_FROM.rpartition("@")[2]
SELECTOR = "dev"
BOUNCE_SUBDOMAIN = "bounces"
BOUNCE_ADDRESS = f"bounces@{BOUNCE_SUBDOMAIN}.{PLATFORM_DOMAIN}"  # SPF-aligned with the From


def public_key_b64(pem: bytes) -> str:
    """The ``p=`` of a DKIM TXT record: the public key, DER SubjectPublicKeyInfo, base64."""
    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def platform_key(run_dir: Path) -> Path:
    """``.run/dkim/platform.pem`` (RSA-2048, 0600), made on the first start and kept."""
    path = run_dir / "dkim" / "platform.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path


def records(pem: bytes) -> dict[str, str]:
    """TXT records for the platform's domain: DKIM key, DMARC policy, SPF (loopback relay)."""
    return {
        f"{SELECTOR}._domainkey.{PLATFORM_DOMAIN}": f"v=DKIM1; k=rsa; p={public_key_b64(pem)}",
        f"_dmarc.{PLATFORM_DOMAIN}": "v=DMARC1; p=reject; adkim=r; aspf=r",
        f"{BOUNCE_SUBDOMAIN}.{PLATFORM_DOMAIN}": "v=spf1 ip4:127.0.0.1 -all",
    }


def env(run_dir: Path) -> dict[str, str]:
    """notify's (and the bounce receiver's) settings for the local stack's mail identity."""
    pem_path = platform_key(run_dir)
    (run_dir / "dkim" / "records.txt").write_text(
        "".join(f'{name}. TXT "{value}"\n' for name, value in records(pem_path.read_bytes())
                .items()))
    return {"SECMSG_SMTP_FROM": PLATFORM_FROM,
            "SECMSG_NOTIFY_DKIM_DOMAIN": PLATFORM_DOMAIN,
            "SECMSG_NOTIFY_DKIM_SELECTOR": SELECTOR,
            "SECMSG_NOTIFY_DKIM_PRIVATE_KEY_FILE": str(pem_path),
            "SECMSG_NOTIFY_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
            "SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN": BOUNCE_SUBDOMAIN}
