from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devstack.servers import Stack
from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from tests.e2e.helpers import Platform


@pytest.fixture
async def platform(services: Callable[..., ServiceProc], mongo_db: Any, sink: Sink,
                   stack: Stack, settings: Any) -> AsyncIterator[Platform]:
    """All four services as real processes against this test's servers, plus one tenant."""
    from secmsg.ingest.admin import create_api_key, create_tenant

    fast = {"SECMSG_NOTIFY_RETRY_BASE_S": "0.5", "SECMSG_NOTIFY_RETRY_MAX_S": "2"}
    procs = {name: services(name, **fast) for name in ("store", "notify", "retrieve", "ingest")}
    await create_tenant(mongo_db, tenant_id="acme", name="Acme Medical",
                        footer="Sent by Acme Medical of 123 ABC Street Beverly Hills, CA 90210, "
                               "Call: (555) 555-7323",
                        disclaimers=["Confidential: for the named recipients only."])
    key = await create_api_key(mongo_db, tenant_id="acme", label="e2e")
    yield Platform(tenant="acme", api_key=key, db=mongo_db, sink=sink,
                   s3_data_dir=stack.s3_data_dir / settings.s3_bucket, procs=procs,
                   start_service=services)
