"""The signed tickets (``secmsg.retrieve.tickets``) as pure logic: what opens and what does not.

Through the real app they are exercised by the TOTP step (test_asvs_authentication.py) and the
passkey ceremonies (tests/webmail/test_passkey_answers.py, test_passkeys.py)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from secmsg.retrieve import tickets

SECRET = "a-pepper-of-sixteen-or-more"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(fields=st.lists(texts, max_size=4), purpose=st.sampled_from(["mfa", "passkey-signin"]),
       ttl_s=st.integers(1, 900))
def test_round_trip(fields: list[str], purpose: str, ttl_s: int) -> None:
    ticket = tickets.seal(SECRET, purpose, fields, ttl_s=ttl_s, now=NOW)
    assert ticket.isascii() and "=" not in ticket  # fits a form field or JSON as it is
    opened = tickets.open_(SECRET, purpose, ticket, now=NOW + timedelta(seconds=ttl_s - 1))
    assert opened is not None
    assert opened.fields == tuple(fields)
    assert opened.expires_at == NOW + timedelta(seconds=ttl_s)
    # ... and is refused from its expiry second on.
    assert tickets.open_(SECRET, purpose, ticket, now=NOW + timedelta(seconds=ttl_s)) is None


def test_each_ticket_has_its_own_nonce() -> None:
    one = tickets.open_(SECRET, "mfa", tickets.seal(SECRET, "mfa", ["t", "a"], ttl_s=60,
                                                    now=NOW), now=NOW)
    two = tickets.open_(SECRET, "mfa", tickets.seal(SECRET, "mfa", ["t", "a"], ttl_s=60,
                                                    now=NOW), now=NOW)
    assert one is not None and two is not None and one.nonce != two.nonce


def test_a_ticket_for_one_purpose_does_not_open_for_another() -> None:
    ticket = tickets.seal(SECRET, "passkey-signin", ["acme", "", "Y2hhbGxlbmdl"], ttl_s=60,
                          now=NOW)
    assert tickets.open_(SECRET, "passkey-signin", ticket, now=NOW) is not None
    for other in ("passkey-register", "mfa", "passkey-signin ", ""):
        assert tickets.open_(SECRET, other, ticket, now=NOW) is None, other


def test_another_secret_does_not_open_it() -> None:
    ticket = tickets.seal(SECRET, "mfa", ["acme", "bob@example.org"], ttl_s=60, now=NOW)
    assert tickets.open_(SECRET + "x", "mfa", ticket, now=NOW) is None


@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_changed_bit_is_refused(position: int, bit: int) -> None:
    ticket = tickets.seal(SECRET, "mfa", ["acme", "bob@example.org"], ttl_s=60, now=NOW)
    raw = bytearray(base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4)))
    raw[position % len(raw)] ^= 1 << bit
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    assert tickets.open_(SECRET, "mfa", forged, now=NOW) is None


@given(garbage=st.text(max_size=200))
def test_garbage_is_refused_never_raises(garbage: str) -> None:
    assert tickets.open_(SECRET, "mfa", garbage, now=NOW) is None
