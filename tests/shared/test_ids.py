"""The id, token and marker formats (``secmsg.shared.ids``, ``secmsg.shared.markers``): what is
written reads back the same, and what is not one is refused (property-based)."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from secmsg.shared import ids, markers, templating
from secmsg.toolbar import mailbox

HEX = "0123456789abcdef"
hex_ids = st.text(alphabet=HEX, min_size=32, max_size=32)
tenants = st.from_regex(ids.TENANT_ID_PATTERN, fullmatch=True)
secrets_ = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=43,
                   max_size=43)
bases = st.sampled_from(["https://secure.example", "https://secure.example/",
                         "http://127.0.0.1:8443", "https://mail.example.org/secmsg/"])
FAST = settings(max_examples=200, deadline=None)


@FAST
@given(hex_ids)
def test_message_ids_round_trip(mid: str) -> None:
    assert ids.parse_message_id(mid) == mid and ids.is_message_id(mid)


@FAST
@given(st.text(max_size=40))
def test_anything_else_is_not_a_message_id(text: str) -> None:
    expected = len(text) == 32 and set(text) <= set(HEX)
    assert ids.is_message_id(text) is expected
    # The anchored pattern for pydantic/FastAPI agrees (and refuses a trailing newline).
    assert ids.is_message_id(text + "\n") is False


def test_new_ids_are_message_ids() -> None:
    made = {ids.new_id() for _ in range(100)}
    assert len(made) == 100 and all(ids.is_message_id(m) for m in made)


@FAST
@given(hex_ids, secrets_)
def test_user_tokens_round_trip(token_id: str, secret: str) -> None:
    token = ids.UserToken(token_id, secret)
    text = str(token)
    assert text.startswith(ids.TOKEN_PREFIX) and ids.looks_like_user_token(text)
    assert ids.UserToken.parse(text) == token
    assert str(ids.UserToken.parse(text)) == text


@FAST
@given(st.text(max_size=90))
def test_text_that_is_not_a_token_does_not_parse(text: str) -> None:
    parsed = ids.UserToken.parse(text)
    assert parsed is None or str(parsed) == text
    assert ids.UserToken.parse(ids.TOKEN_PREFIX + text + "\n") is None


def test_new_tokens_parse_and_differ() -> None:
    a, b = ids.UserToken.new(), ids.UserToken.new()
    assert a != b and ids.UserToken.parse(str(a)) == a
    assert ids.token_hash(str(a)) != ids.token_hash(str(b)) and len(ids.token_hash("x")) == 64


@FAST
@given(bases, tenants, hex_ids)
def test_message_links_round_trip(base: str, tenant: str, mid: str) -> None:
    url = markers.message_url(base, tenant, mid)
    assert "//m/" not in url
    assert markers.parse_message_url(url) == (tenant, mid)
    # notify and ingest write it through templating; it is the same link.
    assert templating.message_url(base, tenant, mid) == url


def test_a_link_with_a_longer_id_is_not_a_message_link() -> None:
    assert markers.parse_message_url("https://x.example/m/acme/" + "a" * 33) is None
    assert markers.parse_message_url("https://x.example/m/Acme/" + "a" * 32) is None


@settings(max_examples=50, deadline=None)
@given(bases, tenants, hex_ids, st.text(max_size=200))
def test_the_frames_markers_parse_back(base: str, tenant: str, mid: str, body: str) -> None:
    """What the one writer of the body markers (templating's frames) writes, the parsers --
    retrieve's and notify's through ``markers``, and the standalone toolbar's own copy --
    read back."""
    url = markers.message_url(base, tenant, mid)
    text, html = templating.render_frames(text_body=body, html_body="<p>hi</p>",
                                          message_id=mid, url=url, subject="s")
    assert markers.body_message_ids(text)[-1] == mid
    assert markers.body_message_urls(text)[-1] == url
    assert set(markers.body_message_ids(html)) == {mid}
    assert markers.body_message_urls(html)[0] == url
    for rendered in (text, html):
        found = mailbox._BODY_ID_RE.findall(rendered)
        assert found and found[-1] == mid
    assert mailbox.MARKER == markers.HEADER_ID and mailbox.RETRIEVED == markers.HEADER_RETRIEVED
