"""Metrics never tell which addresses are known: a code request for an address with messages
and one for an unknown address move exactly the same series by the same amounts (once
``secmsg_retrieve_codes_total{outcome="sent"}`` against ``{outcome="unknown"}``)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from devstack.smtp_sink import Sink
from tests.retrieve.helpers import BOB, TENANT, Running, Seeder

WATCHED = ("secmsg_retrieve_codes", "secmsg_retrieve_code_mail_errors",
           "secmsg_retrieve_signins")


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in REGISTRY.collect():
        if family.name.startswith(WATCHED):
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}


async def test_code_metrics_are_the_same_for_known_and_unknown_addresses(
        app: Running, seeder: Seeder, sink: Sink) -> None:
    await seeder.message()
    # The in-process app finishes the request's background task (lookup, mail) before the
    # client gets the answer back, so each delta below is complete.
    first = _samples()
    r = await app.client.post("/v1/auth/code", json={"tenant_id": TENANT, "email": BOB})
    assert r.status_code == 202
    assert sink.handler.for_recipient(BOB.lower())  # known: the code went out
    second = _samples()
    r = await app.client.post("/v1/auth/code",
                              json={"tenant_id": TENANT, "email": "nobody@example.org"})
    assert r.status_code == 202
    assert not sink.handler.for_recipient("nobody@example.org")
    third = _samples()

    known, unknown = _delta(first, second), _delta(second, third)
    assert known == unknown
    assert known == {("secmsg_retrieve_codes_total", (("outcome", "accepted"),)): 1.0}
