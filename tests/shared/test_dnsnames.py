"""The shared DNS-name check (``secmsg.shared.dnsnames``): what passes, what does not, and the
sentence a refused value gets. Used by notify's EHLO_NAME and TENANT_BOUNCE_SUBDOMAIN, the
deliverability monitor's lists and ingest's DKIM domain and selector."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from secmsg.shared.dnsnames import DnsName, DnsPrefix, Fqdn, dns_name, is_dns_name

# An independent statement of the rule (RFC 1123 host names), as the oracle.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
ORACLE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\Z")

labels = st.from_regex(re.compile(rf"{_LABEL}\Z", re.IGNORECASE), fullmatch=True)
names = st.lists(labels, min_size=1, max_size=6).map(".".join).filter(lambda n: len(n) <= 253)
FQDN = TypeAdapter(Fqdn)
NAME = TypeAdapter(DnsName)


@given(name=names, dot=st.booleans(), pad=st.sampled_from(["", " ", "\t"]))
def test_names_pass_normalised(name: str, dot: bool, pad: str) -> None:
    given_as = f"{pad}{name}{'.' if dot else ''}{pad}"
    assert NAME.validate_python(given_as) == name.lower()
    assert is_dns_name(name)
    if "." in name:
        assert FQDN.validate_python(given_as) == name.lower()
    else:
        with pytest.raises(ValidationError, match="not a fully qualified domain name: one "
                                                  "label only"):
            FQDN.validate_python(given_as)


@given(value=st.text(alphabet=st.sampled_from("aZ09-._@ \u00e9"), max_size=70))
def test_accepted_exactly_when_the_rule_says_so(value: str) -> None:
    normalised = value.strip().lower().removesuffix(".")
    if ORACLE.match(normalised):
        assert dns_name(value) == normalised
    else:
        with pytest.raises(ValueError, match=f"^{re.escape(repr(value))} is not a DNS name: "):
            dns_name(value)


@pytest.mark.parametrize(("value", "problem"), [
    ("", "it is empty"),
    ("no_dots", "'_' in the label 'no_dots': only letters a-z, digits and hyphens"),
    ("bücher.example", "'ü' in the label 'bücher': only letters a-z, digits and hyphens "
                       "(international names in their xn-- form)"),
    ("a..b.example", "an empty label"),
    (".a.example", "an empty label"),
    ("-x.example", "the label '-x' starts or ends with a hyphen"),
    ("x-.example", "the label 'x-' starts or ends with a hyphen"),
    ("a" * 64 + ".example", "is longer than 63 characters"),
    ("a." * 126 + "example", "longer than 253 characters"),
])
def test_the_refusal_says_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FQDN.validate_python(value)
    [error] = caught.value.errors()
    assert "is not a fully qualified domain name: " in error["msg"]
    assert problem in error["msg"]
    assert not is_dns_name(value)


def test_a_prefix_leaves_room_for_the_domain() -> None:
    prefix = TypeAdapter(DnsPrefix)
    assert prefix.validate_python("Bounces") == "bounces"
    ok = ".".join(["a" * 49] * 4)  # 199 characters
    assert prefix.validate_python(ok) == ok
    with pytest.raises(ValidationError, match="longer than 200 characters"):
        prefix.validate_python(ok + "bc")


def test_a_very_long_value_is_shown_cut() -> None:
    with pytest.raises(ValueError, match=r"^'x{80}'\.\.\. is not a DNS name: longer than 253"):
        dns_name("x" * 10_000)
