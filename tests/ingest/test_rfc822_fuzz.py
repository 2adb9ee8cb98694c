"""Property: whatever header fields and MIME tree a whole message has, POST /v1/messages/rfc822
answers 200 with every original header field byte-identical in the placeholder, or a JSON 4xx
-- never a 5xx -- and a recipient is only ever an address that the message names as a mailbox
of a To, Cc or Bcc field.

The generator writes header values with control characters, bare CRs and LFs (``Subject:
hi<CR>Bcc: victim@...``), encoded words in several charsets (some decoding to CR LF or other
controls), 8-bit bytes, long and folded lines; and MIME trees of multiparts, ``message/rfc822``
parts and leaves in every transfer encoding, sometimes nested past the limit, sometimes with a
boundary left open, sometimes truncated. Victim addresses appear only where no recipient may
come from (subjects, display names, other fields, bodies); the addresses of the To, Cc and Bcc
mailboxes are recorded as they are drawn.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from secmsg.ingest.rfc822 import MAX_MIME_DEPTH
from tests.ingest.conftest import Ingest
from tests.ingest.test_rfc822 import REPLACED, header_fields, post

VICTIM = "victim@else.example"
CONTROLS = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1c", "\x1d", "\x1e", "\x1f",
            "\x7f", "\x85", "\u2028", "\t"]
CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "iso-2022-jp", "x-unknown", "utf-16"]
SAFE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e, exclude_characters="\\\""),
               max_size=20)
WORDS = st.lists(st.sampled_from([*"abcxyz äöüé€日本", *CONTROLS, "\r\n", "\r", "\n",
                                  f"Bcc: {VICTIM}", "?=", "=?"]), max_size=12).map("".join)


@dataclass
class Drawn:
    """What a draw put in the message: the mailboxes of To, Cc and Bcc."""

    named: set[str] = field(default_factory=set)


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    text = draw(WORDS)
    charset = draw(st.sampled_from(CHARSETS))
    try:
        data = text.encode(charset if charset != "x-unknown" else "utf-8")
    except (UnicodeError, LookupError):
        data = text.encode("utf-8")
    if draw(st.booleans()):
        enc = b"b?" + base64.b64encode(data)
    else:
        enc = b"q?" + binascii.b2a_qp(data, header=True).replace(b"=\n", b"")
    return b"=?" + charset.encode() + b"?" + enc + b"?="


@st.composite
def value_piece(draw: st.DrawFn, nl: bytes) -> bytes:
    kind = draw(st.sampled_from(["safe"] * 4 + ["control", "word", "8bit", "inject", "fold",
                                                "long"]))
    if kind == "safe":
        return draw(SAFE).encode()
    if kind == "control":
        return draw(st.sampled_from(CONTROLS)).encode()
    if kind == "word":
        return b" " + draw(encoded_word()) + b" "
    if kind == "8bit":
        return draw(st.one_of(st.binary(max_size=8).map(lambda b: bytes(x | 0x80 for x in b)),
                              st.text(st.characters(exclude_characters="\r\n"),
                                      max_size=8).map(str.encode)))
    if kind == "inject":
        # A bare line break: one in an LF message is only ever CR (an LF would end the line
        # and start a real field of the sender's own).
        breaks = [b"\r"] if nl == b"\n" else [b"\r", b"\n"]
        return draw(st.sampled_from(breaks)) + f"Bcc: {VICTIM}".encode()
    if kind == "fold":
        return nl + draw(st.sampled_from([b" ", b"\t"])) + draw(SAFE).encode()
    return b"x" * draw(st.integers(900, 1100))


@st.composite
def mailbox(draw: st.DrawFn, drawn: Drawn) -> bytes:
    addr = draw(st.from_regex(r"[a-z]{1,6}@[a-z]{1,6}\.example", fullmatch=True))
    drawn.named.add(addr)
    name = draw(st.sampled_from(["none", "plain", "quoted", "word", "victim"]))
    if name == "none":
        return addr.encode()
    if name == "plain":
        return draw(st.from_regex(r"[A-Za-z]{1,8}( [A-Za-z]{1,8})?", fullmatch=True)).encode() \
            + b" <" + addr.encode() + b">"
    if name == "quoted":
        return b'"' + draw(SAFE).encode() + b'" <' + addr.encode() + b">"
    if name == "victim":
        return f'"{VICTIM}" <{addr}>'.encode()
    return draw(encoded_word()) + b" <" + addr.encode() + b">"


@st.composite
def address_value(draw: st.DrawFn, drawn: Drawn, nl: bytes) -> bytes:
    boxes = draw(st.lists(mailbox(drawn), min_size=1, max_size=2))
    value = b", ".join(boxes)
    if draw(st.sampled_from([False] * 4 + [True])):
        value += draw(value_piece(nl))
    return value


@st.composite
def header_block(draw: st.DrawFn, drawn: Drawn, nl: bytes) -> list[bytes]:
    fields: list[bytes] = []
    if draw(st.sampled_from([True] * 9 + [False])):
        fields.append(b"From: " + draw(st.sampled_from([b"alice@acme.example",
                                                        b"Alice <alice@acme.example>"])))
    for name in (b"To", b"Cc", b"Bcc"):
        if draw(st.sampled_from([True, False, False] if name != b"To" else [True] * 5 + [False])):
            fields.append(name + b": " + draw(address_value(drawn, nl)))
    others = st.lists(st.tuples(
        st.sampled_from([b"Subject", b"Date", b"Message-ID", b"References", b"In-Reply-To",
                         b"X-Mailer", b"Thread-Topic", b"Content-Language"])
        | st.from_regex(rb"X-[A-Za-z0-9-]{1,20}", fullmatch=True),
        st.lists(value_piece(nl), max_size=4).map(b"".join)), max_size=5)
    fields += [name + b": " + value for name, value in draw(others)]
    return list(draw(st.permutations(fields)))


@dataclass
class Leaf:
    ctype: bytes
    cte: bytes | None
    disposition: bytes | None
    data: bytes


@dataclass
class Multi:
    subtype: bytes
    boundary: bytes
    children: list[object]
    close: bool


@dataclass
class Wrapped:
    inner: object  # a message/rfc822 part around a tree


LEAVES = st.builds(
    Leaf,
    ctype=st.sampled_from([b"text/plain; charset=utf-8", b"text/html", b"text/plain; charset="
                           b"x-bogus", b"application/pdf", b"image/png", b"application/ms-tnef",
                           b"text/calendar; method=REQUEST", b"message/delivery-status",
                           b"bogus"]),
    cte=st.sampled_from([None, b"7bit", b"8bit", b"base64", b"quoted-printable", b"binary",
                         b"x-unknown"]),
    disposition=st.sampled_from([None, b"inline", b'attachment; filename="a.pdf"',
                                 b"attachment; filename*=UTF-8''%C3%A4%0D%0A.txt",
                                 f'attachment; filename="{VICTIM}"'.encode()]),
    data=st.binary(max_size=300) | st.text(max_size=100).map(
        lambda t: (t + f" To: {VICTIM}").encode()),
)
TREES = st.recursive(
    LEAVES,
    lambda kids: st.builds(Multi, subtype=st.sampled_from([b"mixed", b"alternative", b"related",
                                                           b"digest", b"report"]),
                           boundary=st.from_regex(rb"[A-Za-z0-9'()+_,./=?-]{1,30}",
                                                  fullmatch=True),
                           children=st.lists(kids, max_size=3),
                           close=st.sampled_from([True] * 9 + [False]))
    | st.builds(Wrapped, inner=kids),
    max_leaves=6)


def deep(depth: int) -> Multi:
    tree: object = Leaf(b"text/plain", None, None, b"deep")
    for i in range(depth):
        tree = Multi(b"mixed", b"d%d" % i, [tree], True)
    assert isinstance(tree, Multi)
    return tree


def render(node: object, nl: bytes) -> tuple[list[bytes], bytes]:
    """(the part's MIME header fields, its body)."""
    if isinstance(node, Leaf):
        head = [b"Content-Type: " + node.ctype]
        body = node.data
        if node.cte is not None:
            head.append(b"Content-Transfer-Encoding: " + node.cte)
            if node.cte == b"base64":
                body = base64.encodebytes(node.data).replace(b"\n", nl)
            elif node.cte == b"quoted-printable":
                body = binascii.b2a_qp(node.data).replace(b"\n", nl)
        if node.disposition is not None:
            head.append(b"Content-Disposition: " + node.disposition)
        return head, body
    if isinstance(node, Wrapped):
        inner_head, inner_body = render(node.inner, nl)
        inner = nl.join([b"From: x@example.net", b"Subject: inner", *inner_head]) + nl + nl
        return [b"Content-Type: message/rfc822"], inner + inner_body
    assert isinstance(node, Multi)
    out = b""
    for child in node.children:
        head, body = render(child, nl)
        out += b"--" + node.boundary + nl + b"".join(h + nl for h in head) + nl + body + nl
    if node.close:
        out += b"--" + node.boundary + b"--" + nl
    return [b'Content-Type: multipart/' + node.subtype + b'; boundary="' + node.boundary
            + b'"'], out


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, Drawn]:
    drawn = Drawn()
    nl = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    fields = draw(header_block(drawn, nl))
    tree = draw(st.one_of(TREES, st.integers(MAX_MIME_DEPTH - 1, MAX_MIME_DEPTH + 2).map(deep))
                if draw(st.sampled_from([True] * 9 + [False])) else TREES)
    mime_head, body = render(tree, nl)
    if draw(st.booleans()):
        fields = [*fields, b"MIME-Version: 1.0", *mime_head]
    raw = b"".join(f + nl for f in fields) + nl + body
    mangle = draw(st.sampled_from(["none"] * 8 + ["truncate", "inject"]))
    if mangle == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif mangle == "inject":
        pos = draw(st.integers(0, len(raw)))
        raw = raw[:pos] + draw(st.binary(min_size=1, max_size=12)) + raw[pos:]
    return raw, drawn


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(drawn_message=messages())
async def test_any_message_gets_200_with_its_header_or_a_4xx(
        ingest: Ingest, drawn_message: tuple[bytes, Drawn]) -> None:
    raw, drawn = drawn_message
    r = await post(ingest, raw)
    assert r.status_code in (200, 400, 413), r.text
    event(f"status {r.status_code}")  # --hypothesis-show-statistics: how many were accepted
    if r.status_code != 200:
        event(r.json()["detail"][:40])
        assert set(r.json()) == {"error", "detail"} and r.json()["detail"]
        return
    message_id = r.headers["x-secure-message-id"]
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    newline = b"\r\n" if crlf >= 0 and (lf < 0 or crlf < lf) else b"\n"
    head = r.content.split(newline + newline, 1)[0] + newline
    for f in header_fields(raw):
        name = f.split(b":", 1)[0].decode().lower()
        if name not in REPLACED and not name.startswith("x-secure-message-"):
            assert f in head, f
    [received] = [e for e in await ingest.events() if e.message_id == message_id]
    got = {x.address for x in received.recipients}
    assert got, "a 200 without recipients"
    assert VICTIM not in got
    assert got <= drawn.named, got - drawn.named
