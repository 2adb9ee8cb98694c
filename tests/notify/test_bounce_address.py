"""The VERP envelope sender: built and parsed back the same way by notify and the bounce
receiver."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secmsg.notify.bounce_address import (
    address_hash,
    bounce_address,
    bounce_tag,
    parse_bounce_address,
)

MID = "0123456789abcdef0123456789abcdef"


def test_tag_format() -> None:
    tag = bounce_tag("acme", MID, "Bob@Example.COM")
    assert tag == f"acme.{MID}.{address_hash('bob@example.com')}"
    assert len(tag.rsplit(".", 1)[1]) == 16


def test_address_roundtrip_and_base_check() -> None:
    a = bounce_address("bounces@notify.example", tenant_id="acme-2", message_id=MID,
                       address="bob@example.com")
    assert a.startswith("bounces+acme-2.") and a.endswith("@notify.example")
    expected = ("acme-2", MID, address_hash("bob@example.com"))
    assert parse_bounce_address(a) == expected
    assert parse_bounce_address(f"<{a.upper()}>", base="bounces@notify.example") == expected
    assert parse_bounce_address(a, base="other@notify.example") is None
    assert parse_bounce_address(a, base="bounces@elsewhere.example") is None


@pytest.mark.parametrize("value", [
    "", "bounces@notify.example", "bounces+@notify.example", "+acme.ab.0123456789abcdef@x",
    "bounces+acme.xyz.0123456789abcdef@x", "bounces+acme.ab.0123@x",
    "bounces+Acme_1.ab.0123456789abcdef@x", "no-at-sign",
])
def test_parse_rejects(value: str) -> None:
    assert parse_bounce_address(value) is None


def test_unusable_ids_refused() -> None:
    with pytest.raises(ValueError):
        bounce_tag("Not_A_Tenant", MID, "a@b.c")
    with pytest.raises(ValueError):
        bounce_tag("acme", "not.hex", "a@b.c")
    with pytest.raises(ValueError):
        bounce_address("no-at", tenant_id="acme", message_id=MID, address="a@b.c")


@given(tenant=st.from_regex(r"[a-z0-9][a-z0-9-]{0,39}", fullmatch=True),
       mid=st.from_regex(r"[0-9a-f]{32}", fullmatch=True), addr=st.emails())
def test_roundtrip_property(tenant: str, mid: str, addr: str) -> None:
    a = bounce_address("b@n.example", tenant_id=tenant, message_id=mid, address=addr)
    assert parse_bounce_address(a, base="b@n.example") == (tenant, mid, address_hash(addr))
