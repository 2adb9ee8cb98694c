"""DNS names as settings and API fields take them: one check, one clear message.

* :data:`DnsName` -- one label or more (``bounces``, ``secmsg1``, ``zen.spamhaus.org``);
* :data:`Fqdn` -- a fully qualified domain name, two labels or more (``mail1.notify.example``);
* :data:`DnsPrefix` -- a :data:`DnsName` of at most 200 characters, to go in front of another
  domain (``<prefix>.<domain>``).

Both are pydantic annotated ``str`` types. A value is stripped, lower-cased and loses the root's
trailing dot; then each label must be 1-63 letters (a-z), digits or hyphens, not starting or
ending with a hyphen, and the whole name at most 253 characters (RFC 1035 2.3.1, RFC 1123
2.1). International names are given in their ``xn--`` (punycode) form. The error names the
first rule the value breaks, e.g. ``'a..b.example' is not a DNS name: an empty label (two dots
in a row)``. :data:`BlankIsNone` turns an empty setting into ``None`` for optional fields.
"""

from __future__ import annotations

import string
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

MAX_NAME = 253
MAX_LABEL = 63
MAX_PREFIX = 200
_LABEL_CHARS = frozenset(string.ascii_lowercase + string.digits + "-")


def _problem(name: str, min_labels: int, max_length: int) -> str | None:
    """What is wrong with the normalised ``name``, or None."""
    if not name:
        return "it is empty"
    if len(name) > max_length:
        return f"longer than {max_length} characters"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "an empty label (a dot at the start or two dots in a row)"
        if len(label) > MAX_LABEL:
            return f"the label {label[:20]!r}... is longer than {MAX_LABEL} characters"
        if not set(label) <= _LABEL_CHARS:
            bad = next(c for c in label if c not in _LABEL_CHARS)
            return (f"{bad!r} in the label {label!r}: only letters a-z, digits and hyphens "
                    "(international names in their xn-- form)")
        if label[0] == "-" or label[-1] == "-":
            return f"the label {label!r} starts or ends with a hyphen"
    if len(labels) < min_labels:
        return "one label only; a fully qualified name has two or more, e.g. mail.example.org"
    return None


def dns_name(value: str, *, min_labels: int = 1, max_length: int = MAX_NAME) -> str:
    """``value`` as a normalised DNS name of at least ``min_labels`` labels and at most
    ``max_length`` characters (lower case, no trailing dot); ValueError saying what is wrong
    otherwise."""
    name = value.strip().lower().removesuffix(".")
    problem = _problem(name, min_labels, max_length)
    if problem is not None:
        what = "a fully qualified domain name" if min_labels > 1 else "a DNS name"
        shown = repr(value) if len(value) <= 80 else f"{value[:80]!r}..."
        raise ValueError(f"{shown} is not {what}: {problem}")
    return name


def is_dns_name(name: str, *, min_labels: int = 1) -> bool:
    """Whether ``name`` is a DNS name as it stands (any case; no stripping, no trailing dot)."""
    return _problem(name.lower(), min_labels, MAX_NAME) is None


def _validator(min_labels: int, max_length: int = MAX_NAME) -> AfterValidator:
    def check(value: str) -> str:
        return dns_name(value, min_labels=min_labels, max_length=max_length)
    return AfterValidator(check)


def _schema(max_length: int) -> Any:  # a FieldInfo: the limit in the JSON Schema (OpenAPI);
    # the check itself is dns_name's. + 1: a trailing dot (the root) is allowed.
    return Field(json_schema_extra={"maxLength": max_length + 1})


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


DnsName = Annotated[str, _validator(1), _schema(MAX_NAME)]
Fqdn = Annotated[str, _validator(2), _schema(MAX_NAME)]
# Labels put in front of another domain (``<this>.<domain>``): room left for the domain.
DnsPrefix = Annotated[str, _validator(1, max_length=MAX_PREFIX), _schema(MAX_PREFIX)]
BlankIsNone = BeforeValidator(_blank_is_none)
