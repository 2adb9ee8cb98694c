"""Upload slots: how many submissions run at once, on this instance and per tenant.

A submission holds its slot while its body streams in. With one shared pool, one tenant's
slow (or deliberately trickling) uploads could hold every slot and turn every other sender
away; with a per-tenant cap below the total, the others always keep room. Taking a slot
never waits: a full pool answers 429 at once (the client retries), so memory stays bounded.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from secmsg.shared.errors import TooManyRequests


class UploadSlots:
    def __init__(self, total: int, per_tenant: int) -> None:
        self.total = total
        self.per_tenant = min(per_tenant, total)
        self._in_use = 0
        self._by_tenant: Counter[str] = Counter()

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextlib.contextmanager
    def hold(self, tenant_id: str) -> Iterator[None]:
        """A slot for one submission of ``tenant_id``; TooManyRequests when none is free."""
        if self._in_use >= self.total:
            raise TooManyRequests("too many submissions in progress on this instance; "
                                  "retry shortly")
        if self._by_tenant[tenant_id] >= self.per_tenant:
            raise TooManyRequests("too many submissions of this tenant in progress; "
                                  "retry shortly")
        self._in_use += 1
        self._by_tenant[tenant_id] += 1
        try:
            yield
        finally:
            self._in_use -= 1
            self._by_tenant[tenant_id] -= 1
            if not self._by_tenant[tenant_id]:
                del self._by_tenant[tenant_id]
