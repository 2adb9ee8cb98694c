"""X-Forwarded-For is believed only from configured proxies (a real retrieve process over TCP).

A client that is not a trusted proxy cannot pick the address its rate limits count against:
however it varies X-Forwarded-For, it is limited by its real (TCP) address.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from devstack.services import ServiceProc
from tests.retrieve.helpers import TENANT, Seeder

PER_IP = 3


async def _code_requests(svc: ServiceProc, n: int) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(base_url=svc.base_url, verify=False, timeout=20) as client:
        for i in range(n):
            r = await client.post(
                "/v1/auth/code", json={"tenant_id": TENANT, "email": f"fwd{i}@example.org"},
                headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
            assert r.status_code in (202, 429), r.text
            statuses.append(r.status_code)
    return statuses


async def test_forwarded_for_from_an_untrusted_peer_is_ignored_by_the_rate_limit(
        services: Callable[..., ServiceProc], seeder: Seeder) -> None:
    # Default settings: no proxy is trusted. Each request claims another client address;
    # the per-IP limit still counts them all against 127.0.0.1.
    svc = services("retrieve", SECMSG_RETRIEVE_CODE_REQUESTS_PER_IP=PER_IP)
    assert await _code_requests(svc, PER_IP + 2) == [202] * PER_IP + [429, 429]


async def test_forwarded_for_from_a_configured_proxy_names_the_client(
        services: Callable[..., ServiceProc], seeder: Seeder) -> None:
    # Behind a trusted proxy (here: loopback, as the ingress controller's range would be),
    # each forwarded client is counted on its own.
    svc = services("retrieve", SECMSG_RETRIEVE_CODE_REQUESTS_PER_IP=PER_IP,
                   SECMSG_RETRIEVE_FORWARDED_ALLOW_IPS="127.0.0.1/32")
    assert await _code_requests(svc, PER_IP + 2) == [202] * (PER_IP + 2)
