"""Property: whatever the envelope or multipart shape, ingest answers 202 or a JSON 4xx --
never a 5xx -- and only accepted messages leave objects and events behind."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest.conftest import BOUNDARY, Ingest, Part, att, env_part, multipart

ADDRESSES = st.one_of(
    st.sampled_from(["bob@example.org", "c@example.net", "x@y", "@", "a b@c.d", "é@ü.example",
                     "bob@example.org\r\n", ""]),
    st.emails().map(str),
    st.text(max_size=30),
)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)

ENVELOPES = st.fixed_dictionaries(
    {},
    optional={
        "from": ADDRESSES, "to": st.lists(ADDRESSES, max_size=5) | JSONISH,
        "cc": st.lists(ADDRESSES, max_size=3), "subject": st.text(max_size=60) | JSONISH,
        "text": st.text(max_size=300), "html": st.text(max_size=100),
        "expires_in_days": st.integers(-5, 5000) | JSONISH,
        "expires_at": st.sampled_from(["2000-01-01T00:00:00Z", "2999-01-01", "tomorrow",
                                       "2030-01-01T00:00:00+02:00"]),
        "disclaimer": st.text(max_size=40), "extra": JSONISH,
    })

ATTACHMENTS = st.lists(st.tuples(
    st.one_of(st.none(), st.text(max_size=40).filter(lambda s: '"' not in s and "\r" not in s
                                                     and "\n" not in s)),
    st.binary(max_size=3000),
    st.sampled_from([None, "text/plain", "application/x-\x00", "bogus", "image/png"]),
), max_size=5)


# Mostly plausible envelopes, so that acceptance is exercised as much as refusal.
VALID_ENVELOPES = st.fixed_dictionaries(
    {"from": st.just("alice@acme.example"),
     "to": st.lists(st.emails().map(str), min_size=1, max_size=3),
     "text": st.text(max_size=200)},
    optional={"subject": st.text(max_size=60), "html": st.text(max_size=100),
              "cc": st.lists(st.emails().map(str), max_size=1),
              "expires_in_days": st.integers(1, 400), "disclaimer": st.text(max_size=40)})


def often(value: object, rare: object) -> st.SearchStrategy[Any]:
    """``value`` nine times in ten (and what shrinking goes back to)."""
    return st.sampled_from([value] * 9 + [rare])


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    env: Any = draw(st.one_of(VALID_ENVELOPES, ENVELOPES))
    raw_env = json.dumps(env).encode() if draw(often(True, False)) else draw(st.binary())
    parts: list[Part] = [env_part(raw_env)] if draw(often(True, False)) else []
    parts += [att(name, data, ctype) for name, data, ctype in draw(ATTACHMENTS)]
    if draw(often(False, True)):
        parts = draw(st.permutations(parts))
    if draw(often(False, True)):
        parts.append((draw(st.text(max_size=8)).replace('"', ""), None, None, b"?"))
    body = multipart(parts, close=draw(often(True, False)))
    mangle = draw(st.sampled_from(["none"] * 8 + ["truncate", "inject"]))
    if mangle == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif mangle == "inject":
        pos = draw(st.integers(0, len(body)))
        body = body[:pos] + draw(st.binary(min_size=1, max_size=20)) + body[pos:]
    return body


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies(), ctype=st.sampled_from([f"multipart/form-data; boundary={BOUNDARY}"] * 6
                                             + ["multipart/form-data", "text/plain", ""]))
async def test_fuzzed_submissions_never_5xx(ingest: Ingest, body: bytes, ctype: str) -> None:
    headers = {**ingest.headers(), "Content-Type": ctype}
    r = await ingest.client.post("/v1/messages", content=body, headers=headers)
    assert r.status_code in (202, 400, 413, 415), r.text
    data = r.json()
    if r.status_code == 202:
        accepted = data["message_id"]
        events = {e.message_id: e for e in await ingest.events()}
        assert accepted in events
        prefix = f"t/acme/m/{accepted}/"
        assert {o.key for o in events[accepted].objects} == {
            k for k in await ingest.keys() if k.startswith(prefix)}
    else:
        assert set(data) == {"error", "detail"} and data["detail"]
    # Only accepted messages own objects.
    owners = {k.split("/")[3] for k in await ingest.keys()}
    assert owners <= {e.message_id for e in await ingest.events()}
