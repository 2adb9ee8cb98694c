"""Rendering tenant templates: compile (cached by source) and check a source at save
(:func:`validate`), render a stored one with real data or fall back to the shipped default
(:func:`render_or_default`), and do it off the event loop, fairly between tenants
(:class:`RenderPool`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar

from secmsg.shared.errors import InvalidInput, PayloadTooLarge, TransientError
from secmsg.shared.templating.kinds import KINDS, get_kind, sample_context
from secmsg.shared.templating.sandbox import (
    DEFAULT_LIMITS,
    LIMITS,
    CheckedTemplate,
    Limits,
    compile_template,
    render_limited,
)

__all__ = ["RenderBusy", "RenderPool", "compile_checked", "default_pool",
           "render_or_default", "validate"]


def compile_checked(kind: str, source: str, *, limits: Limits = LIMITS) -> CheckedTemplate:
    """Compile ``source`` as a ``kind`` template or raise ``InvalidInput`` (``PayloadTooLarge``
    for the size limit) with a sentence naming the problem."""
    k = get_kind(kind)
    if not isinstance(source, str):
        raise InvalidInput("the template source must be a string")
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > limits.max_source_bytes:
        raise PayloadTooLarge(f"the template is {size} bytes; the limit is "
                              f"{limits.max_source_bytes}")
    return _compile(k.name, source)




@lru_cache(maxsize=256)
def _compile(kind: str, source: str) -> CheckedTemplate:
    # Cached by source: notify renders the same stored template for many events.
    return compile_template(KINDS[kind], source)


def validate(kind: str, source: str, context: Mapping[str, Any] | None = None, *,
             limits: Limits = LIMITS) -> str:
    """The save-time check: compile, render ``context`` (default: the sample) within the
    limits, and make sure the link is in the output. Returns the rendered sample."""
    checked = compile_checked(kind, source, limits=limits)
    ctx = dict(context) if context is not None else sample_context(kind)
    output = render_limited(checked, ctx, limits=limits)
    if missing := _missing_required(kind, ctx, output):
        raise InvalidInput(f"the rendered template does not show {{{{ {missing} }}}}: "
                           f"without it the email is useless")
    return output


def _missing_required(kind: str, context: Mapping[str, Any], output: str) -> str | None:
    return next((n for n in KINDS[kind].required if str(context.get(n)) not in output), None)


_log = logging.getLogger("secmsg.shared.templating")


def render_or_default(kind: str, source: str | None, context: Mapping[str, Any], *,
                      log: logging.Logger = _log, limits: Limits = LIMITS) -> str:
    """Render a tenant's stored template (validated at save) with real data; if it fails on
    that data or loses a required value (the link, the code), render the shipped default
    instead -- the mail must go out either way. Used by every renderer of tenant templates
    (notify's notifications, ingest's placeholders, retrieve's code mails). Only the error
    class is logged: an error message could quote the data."""
    if source is not None:
        try:
            out = render_limited(compile_checked(kind, source), context, limits=limits)
            if not _missing_required(kind, context, out):
                return out
            log.warning("tenant template %s lost a required value; the default is used", kind)
        except InvalidInput as exc:
            log.warning("tenant template %s failed at render (%s); the default is used",
                        kind, exc.code)
    default = compile_checked(kind, KINDS[kind].default, limits=DEFAULT_LIMITS)
    return render_limited(default, context, limits=DEFAULT_LIMITS)


_P = ParamSpec("_P")
_T = TypeVar("_T")


class RenderBusy(TransientError):
    """The tenant already has its fill of renders waiting: come back in ``retry_in`` s."""

    code = "render_busy"

    def __init__(self, detail: str, *, retry_in: float) -> None:
        super().__init__(detail)
        self.retry_in = retry_in


class RenderPool:
    """Renders tenant templates off the event loop, fairly between tenants.

    A tenant's template may legally spend up to ``render_timeout_s`` of CPU per render; on a
    service's event loop that stalls every other tenant's work meanwhile (measured: 30
    messages with a 0.3 s template delayed another tenant's notification by 5.9 s). Here a
    render runs in a bounded thread pool (``workers`` threads), and at most ``per_tenant``
    renders of one tenant run at once -- the rest of that tenant's renders wait their turn on
    the loop without holding a thread. Another tenant's render therefore finds a thread free
    at once, or after about one render when ``workers`` tenants are rendering slow templates
    at the same time. (Threads, not processes: the cooperative limits above bound each
    render, the loop keeps its share of the GIL, and nothing needs pickling.)

    ``limits`` applies to tenant templates rendered through :meth:`render_or_default`. With
    ``max_waiting``, a tenant that already has that many renders waiting for its turn gets
    :class:`RenderBusy` instead of a place in the queue, so a worker can hand the job back
    (for later) rather than park a handler that another tenant needs.
    """

    def __init__(self, *, workers: int = 4, per_tenant: int = 1,
                 limits: Limits = LIMITS, max_waiting: int | None = None,
                 name: str = "secmsg-render") -> None:
        if workers < 1 or per_tenant < 1:
            raise ValueError("workers and per_tenant must be at least 1")
        self.workers = workers
        self.per_tenant = per_tenant
        self.limits = limits
        self.max_waiting = max_waiting
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # tenant -> (semaphore, users): dropped when the last user leaves, so the map stays
        # as small as the set of tenants rendering right now.
        self._tenants: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=self._name)
            return self._executor

    async def run(self, tenant_id: str, fn: Callable[_P, _T], /,
                  *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` in the pool, in turn with ``tenant_id``'s other renders."""
        sem, users = self._tenants.get(tenant_id, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_tenant)
        elif self.max_waiting is not None and users - self.per_tenant >= self.max_waiting:
            # Roughly when the queue ahead will have drained (each render within the limit).
            raise RenderBusy("the tenant's template renders are queued up",
                             retry_in=max(0.5, users / self.per_tenant
                                          * self.limits.render_timeout_s))
        self._tenants[tenant_id] = (sem, users + 1)
        try:
            async with sem:
                loop = asyncio.get_running_loop()
                ctx = contextvars.copy_context()
                return await loop.run_in_executor(
                    self._pool(), functools.partial(ctx.run, fn, *args, **kwargs))
        finally:
            sem_now, n = self._tenants[tenant_id]
            if n <= 1:
                del self._tenants[tenant_id]
            else:
                self._tenants[tenant_id] = (sem_now, n - 1)

    async def render_or_default(self, tenant_id: str, kind: str, source: str | None,
                                context: Mapping[str, Any], *,
                                log: logging.Logger = _log) -> str:
        """:func:`render_or_default` for ``tenant_id``: a tenant's template in the pool, the
        shipped default (ours, a millisecond) right here."""
        if source is None:
            return render_or_default(kind, None, context, log=log, limits=self.limits)
        return await self.run(tenant_id, render_or_default, kind, source, context, log=log,
                              limits=self.limits)

    def close(self) -> None:
        """Stop the threads (a render in progress finishes first). Idempotent."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


_DEFAULT_POOL = RenderPool()


def default_pool() -> RenderPool:
    """The process's shared pool, for services that render few tenant templates (retrieve's
    code mails); notify sizes its own from its settings."""
    return _DEFAULT_POOL


# The frame notify puts around a rendered notification body and ingest around an RFC 5322
