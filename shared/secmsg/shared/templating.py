"""Tenant-editable templates: the contract between ingest (validates at save) and notify
(renders at send). Both must compile and render a source the same way, so both use this module.

A template runs in Jinja2's ``ImmutableSandboxedEnvironment`` (autoescape on for HTML kinds,
off for text kinds, ``StrictUndefined``, no loader) and is checked twice at save:

1. statically, on the parse tree: size, syntax, only the documented variables, no private
   (``_``) attributes or items, no ``str.format``, only an allow-list of filters, no
   include/import/extends, and the link variable must be used;
2. by rendering a sample context within the limits (:func:`render_limited`).

Limits are enforced cooperatively while rendering: output size and elapsed time are checked
after every output chunk (``Template.generate()``), every loop iteration (each ``for``
iterable is wrapped at compile time), every call, filter, ``~`` concatenation and the
``* ** + %`` operators, and those operations refuse up front results that would exceed the
output limit (e.g. ``'x' * 10**9``) rather than allocate them. Calls are restricted to
macros, ``range``, ``loop.cycle``/``changed``, date formatting and a few length-preserving
string methods.

Templates shape only the body: subject, recipients and the toolbar markers (headers and the
marker lines / hidden span in the body) are added by notify outside the tenant template.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache, update_wrapper
from typing import Any, ParamSpec, TypeVar

from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
)
from jinja2.filters import FILTERS, do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range
from jinja2.utils import pass_eval_context
from jinja2.visitor import NodeTransformer

from secmsg.shared.errors import InvalidInput, PayloadTooLarge, TransientError

__all__ = ["DEFAULT_LIMITS", "KINDS", "LIMITS", "CheckedTemplate", "Kind", "Limits",
           "RenderBusy", "RenderPool", "compile_checked", "default_pool", "render_limited",
           "render_or_default", "sample_context", "validate"]


@dataclass(frozen=True)
class Limits:
    max_source_bytes: int = 32 * 1024
    max_output_bytes: int = 256 * 1024
    render_timeout_s: float = 0.5


LIMITS = Limits()

# What every kind may show of the tenant (``tenants.display_name``, ``branding.logo_url``,
# ``footer``, ``disclaimers``).
_TENANT_VARIABLES: dict[str, str] = {
    "tenant_name": "the tenant's display name",
    "logo_url": "the tenant's logo (an https: or data:image URL), or none",
    "footer": "the tenant's footer, or none",
    "disclaimers": "the tenant's legal disclaimers (list of strings)",
}

_NOTIFICATION_VARIABLES: dict[str, str] = {
    "sender": "the sender's email address",
    "subject": "the message subject as the sender wrote it",
    "attachment_count": "number of attachments (int)",
    "expires_at": "UTC datetime after which the message is gone, or none "
                  "(e.g. expires_at.strftime('%Y-%m-%d'))",
    "link": "the URL of the message (required: a notification without it is useless)",
    **_TENANT_VARIABLES,
    "disclaimer": "the message's own disclaimer, or none",
    "message_id": "the message id (notify adds the toolbar markers itself)",
}

_CODE_VARIABLES: dict[str, str] = {
    "code": "the one-time code (required)",
    "purpose": "what the code is for: 'signin', 'register' or 'reset'",
    "valid_minutes": "how long the code is valid (int)",
    **_TENANT_VARIABLES,
}

# The tenant's logo on top and its footer and legal disclaimers at the end of every default
# (the shipped defaults are whole templates once joined: what a tenant copies to edit).
_LOGO_HTML = """\
{% if logo_url %}
<p><img src="{{ logo_url }}" alt="{{ tenant_name }}" height="48"></p>
{% endif %}
"""

_TENANT_END_TEXT = """\
{% if footer %}

--
{{ footer }}
{% endif %}
{% for d in disclaimers %}

{{ d }}
{% endfor %}
"""

_TENANT_END_HTML = """\
{% if footer %}
<hr>
<p class="footer">{{ footer }}</p>
{% endif %}
{% for d in disclaimers %}
<p class="legal">{{ d }}</p>
{% endfor %}
"""

_DEFAULT_TEXT = """\
{{ sender }} sent you a secure message through {{ tenant_name }}.

Subject: {{ subject }}
{% if attachment_count %}
Attachments: {{ attachment_count }}
{% endif %}
{% if expires_at %}
Available until: {{ expires_at.strftime("%Y-%m-%d %H:%M UTC") }}
{% endif %}

Read it here (you will be asked to sign in):
{{ link }}
{% if disclaimer %}

{{ disclaimer }}
{% endif %}
""" + _TENANT_END_TEXT

_DEFAULT_HTML = _LOGO_HTML + """\
<p><strong>{{ sender }}</strong> sent you a secure message through {{ tenant_name }}.</p>
<p>Subject: {{ subject }}</p>
{% if attachment_count %}
<p>Attachments: {{ attachment_count }}</p>
{% endif %}
{% if expires_at %}
<p>Available until: {{ expires_at.strftime("%Y-%m-%d %H:%M UTC") }}</p>
{% endif %}
<p><a href="{{ link }}">Read the secure message</a> (you will be asked to sign in).</p>
{% if disclaimer %}
<p class="disclaimer">{{ disclaimer }}</p>
{% endif %}
""" + _TENANT_END_HTML

_DEFAULT_CODE_TEXT = """\
Your {{ tenant_name }} secure message code is: {{ code }}

It is valid for {{ valid_minutes }} minutes and can be used once.
If you did not ask for it, ignore this email.
""" + _TENANT_END_TEXT

_DEFAULT_CODE_HTML = _LOGO_HTML + """\
<p>Your {{ tenant_name }} secure message code is:</p>
<p style="font-size:1.6em;letter-spacing:0.15em"><strong>{{ code }}</strong></p>
<p>It is valid for {{ valid_minutes }} minutes and can be used once.
If you did not ask for it, ignore this email.</p>
""" + _TENANT_END_HTML


@dataclass(frozen=True)
class Kind:
    """One editable template: its variables, and the ones whose value must show in the output
    (a notification without its link, or a code mail without its code, is useless)."""

    name: str
    html: bool
    default: str
    variables: Mapping[str, str]
    required: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    "notification_text": Kind("notification_text", False, _DEFAULT_TEXT,
                              _NOTIFICATION_VARIABLES, ("link",)),
    "notification_html": Kind("notification_html", True, _DEFAULT_HTML,
                              _NOTIFICATION_VARIABLES, ("link",)),
    # The one-time-code mail retrieve sends (sign-in, registration, password reset).
    "code_email_text": Kind("code_email_text", False, _DEFAULT_CODE_TEXT,
                            _CODE_VARIABLES, ("code",)),
    "code_email_html": Kind("code_email_html", True, _DEFAULT_CODE_HTML,
                            _CODE_VARIABLES, ("code",)),
}

SAMPLE_LINK = "https://secure.example/m/sample/0123456789abcdef0123456789abcdef"
SAMPLE_LOGO = "https://secure.example/logo.png"


def sample_context(kind: str, *, tenant_name: str = "Example Clinic",
                   footer: str | None = "Example Clinic, 1 Example Street",
                   disclaimers: Iterable[str] = ("Confidential: for the named recipients.",),
                   ) -> dict[str, Any]:
    """What a preview renders; also the save-time check. The subject holds markup on purpose
    (it must come out escaped in HTML)."""
    if _kind(kind).name.startswith("code_email"):
        return {"code": "12345678", "purpose": "signin", "valid_minutes": 10,
                "tenant_name": tenant_name, "logo_url": SAMPLE_LOGO, "footer": footer,
                "disclaimers": list(disclaimers)}
    return {
        "sender": "alice@example.com",
        "subject": "Lab results <b>& more</b>",
        "attachment_count": 2,
        "expires_at": datetime(2030, 1, 31, 12, 0, tzinfo=UTC),
        "link": SAMPLE_LINK,
        "tenant_name": tenant_name,
        "logo_url": SAMPLE_LOGO,
        "footer": footer,
        "disclaimers": list(disclaimers),
        "disclaimer": "Please do not forward.",
        "message_id": "0123456789abcdef0123456789abcdef",
    }


def _kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidInput(f"unknown template kind {name!r}; kinds: "
                           f"{', '.join(sorted(KINDS))}") from None


# -- cooperative limits ----------------------------------------------------------------------

class _LimitExceeded(Exception):
    def __init__(self, detail: str, *, too_large: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.too_large = too_large


@dataclass
class _Budget:
    limits: Limits
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limits.render_timeout_s


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "secmsg_template_budget", default=None)


def _limits() -> Limits:
    budget = _BUDGET.get()
    return budget.limits if budget is not None else LIMITS


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise _LimitExceeded(
            f"rendering took longer than {budget.limits.render_timeout_s:g} s", too_large=False)


def _too_large(what: str) -> _LimitExceeded:
    return _LimitExceeded(f"{what} would be larger than the output limit "
                          f"({_limits().max_output_bytes} bytes)", too_large=True)


def _check_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > _limits().max_output_bytes:
        raise _too_large("a value")
    return value


def _check_args(args: Iterable[Any]) -> None:
    # Widths and counts larger than the output limit can only serve to allocate a lot.
    cap = _limits().max_output_bytes
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > cap:
            raise _too_large(f"a number argument ({a})")


def _guard_filter(func: Any) -> Any:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args(list(args[1:]) + list(kwargs.values()))
        return _check_size(func(*args, **kwargs))
    return update_wrapper(guarded, func)  # keeps jinja_pass_arg (pass_eval_context & co)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "",
          attribute: str | int | None = None) -> str:
    if attribute is not None:
        raise SecurityError("join(attribute=...) is not allowed")
    items = list(value)
    size = len(d) * max(0, len(items) - 1) + sum(len(str(i)) for i in items)
    if size > _limits().max_output_bytes:
        raise _too_large("join()")
    return do_join(eval_ctx, items, d)


@pass_eval_context
def _concat(eval_ctx: EvalContext, parts: list[Any]) -> str:
    # Replaces ``a ~ b``: the size is checked before the join allocates it.
    if sum(len(str(p)) for p in parts) > _limits().max_output_bytes:
        raise _too_large("a ~ concatenation")
    _tick()
    return markup_join(parts) if eval_ctx.autoescape else str_join(parts)


def _loop(iterable: Iterable[Any]) -> Iterator[Any]:
    # Wraps every ``for`` iterable: a loop with an empty body yields no output chunk, so the
    # time limit is checked per iteration.
    for item in iterable:
        _tick()
        yield item


ALLOWED_FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float",
    "forceescape", "int", "join", "last", "length", "list", "lower", "max", "min", "reverse",
    "round", "sort", "string", "striptags", "sum", "title", "trim", "truncate", "unique",
    "upper", "urlencode", "wordcount"})
_INTERNAL = {"_secmsg_loop": _loop, "_secmsg_concat": _concat}
_STR_METHODS = frozenset({"upper", "lower", "strip", "lstrip", "rstrip", "title",
                          "capitalize", "startswith", "endswith"})
_DATE_METHODS = frozenset({"strftime", "isoformat"})


def _callable_allowed(obj: Any) -> bool:
    if isinstance(obj, Macro | LoopContext) or obj is safe_range:
        return True
    if isinstance(obj, types.MethodType | types.BuiltinMethodType):
        owner, name = getattr(obj, "__self__", None), obj.__name__
        if isinstance(owner, date) and name in _DATE_METHODS:
            return True
        if isinstance(owner, LoopContext) and name in ("cycle", "changed"):
            return True
        if isinstance(owner, str) and name in _STR_METHODS:
            return True
    return False


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        cap = _limits().max_output_bytes
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not allowed; use ~ to join")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                and right > 0 and abs(left) > 1 and abs(left).bit_length() * right > 4096:
            raise _too_large("a power")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) \
                        and len(seq) * n > cap:
                    raise _too_large("a repetition")
            if isinstance(left, int) and isinstance(right, int) \
                    and left.bit_length() + right.bit_length() > 4096:
                raise _too_large("a product")
        if operator == "+" and isinstance(left, str | list | tuple) \
                and isinstance(right, str | list | tuple) and len(left) + len(right) > cap:
            raise _too_large("a sum")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        if isinstance(__obj, Undefined):
            __obj()  # raises its own error, e.g. "access to attribute 'append' ... is unsafe"
        if not _callable_allowed(__obj):
            name = getattr(__obj, "__name__", type(__obj).__name__)
            raise SecurityError(f"calling {name!r} is not allowed in a template")
        _check_args(list(args) + list(kwargs.values()))
        return _check_size(super().call(__context, __obj, *args, **kwargs))


@lru_cache(maxsize=2)
def _env(html: bool) -> _Sandbox:
    env = _Sandbox(autoescape=html, undefined=StrictUndefined, trim_blocks=True,
                   lstrip_blocks=True, keep_trailing_newline=True, auto_reload=False,
                   cache_size=0)
    # No cycler/joiner/namespace/lipsum/dict: the documented variables and range are enough.
    env.globals.clear()
    env.globals["range"] = safe_range
    env.filters = {name: _guard_filter(FILTERS[name]) for name in ALLOWED_FILTERS
                   if name != "join"}
    env.filters["join"] = _guard_filter(_join)
    env.filters.update(_INTERNAL)
    return env


# -- static checks and compilation -----------------------------------------------------------

_FORBIDDEN_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
    nodes.Extends: "extends"}


def _static_check(kind: Kind, tree: nodes.Template, env: _Sandbox) -> None:
    for node in tree.find_all(nodes.Node):
        where = f"line {node.lineno}: "
        if type(node) in _FORBIDDEN_STATEMENTS:
            raise InvalidInput(f"{where}{{% {_FORBIDDEN_STATEMENTS[type(node)]} %}} is not "
                               f"allowed: a template is one self-contained source")
        if isinstance(node, nodes.Getattr):
            _check_attr(where, node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            _check_attr(where, node.arg.value)
        elif isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            raise InvalidInput(f"{where}filter {node.name!r} is not allowed; allowed: "
                               f"{', '.join(sorted(ALLOWED_FILTERS))}")
        elif isinstance(node, nodes.Name) and node.name == "self":
            raise InvalidInput(f"{where}'self' is not available in a template")
    unknown = meta.find_undeclared_variables(tree) - set(kind.variables)
    if unknown:
        raise InvalidInput(f"unknown variable(s) {', '.join(sorted(unknown))}; a "
                           f"{kind.name} template may use: {', '.join(kind.variables)}")
    used = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    for name in kind.required:
        if name not in used:
            raise InvalidInput(f"the template must use {{{{ {name} }}}}: "
                               f"{kind.variables.get(name, 'required')}")


def _check_attr(where: str, name: str) -> None:
    if name.startswith("_"):
        raise InvalidInput(f"{where}attribute {name!r} is not allowed (names starting "
                           f"with '_' are private)")
    if name in ("format", "format_map", "mro"):
        raise InvalidInput(f"{where}{name!r} is not allowed in a template")


class _Guards(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_secmsg_loop", [], [], None, None,
                                 lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_secmsg_concat",
                            [], [], None, None, lineno=node.lineno)


@dataclass(frozen=True)
class CheckedTemplate:
    kind: str
    template: Any  # jinja2.Template compiled by the sandbox


def compile_checked(kind: str, source: str, *, limits: Limits = LIMITS) -> CheckedTemplate:
    """Compile ``source`` as a ``kind`` template or raise ``InvalidInput`` (``PayloadTooLarge``
    for the size limit) with a sentence naming the problem."""
    k = _kind(kind)
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
    k = KINDS[kind]
    env = _env(k.html)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"syntax error on line {exc.lineno}: {exc.message}") from None
    except (TemplateError, RecursionError, ValueError) as exc:
        raise InvalidInput(f"the template does not parse: {exc}") from None
    _static_check(k, tree, env)
    tree = _Guards().visit(tree)
    tree.set_environment(env)
    try:
        template = env.from_string(tree)
    except TemplateError as exc:
        raise InvalidInput(f"the template does not compile: {exc}") from None
    except (RecursionError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the template does not compile ({type(exc).__name__})") from None
    return CheckedTemplate(kind, template)


def render_limited(template: CheckedTemplate, context: Mapping[str, Any], *,
                   limits: Limits = LIMITS) -> str:
    """Render within the output and time limits; ``InvalidInput``/``PayloadTooLarge`` else."""
    token = _BUDGET.set(_Budget(limits))
    out: list[str] = []
    size = 0
    try:
        for chunk in template.template.generate(dict(context)):
            size += len(chunk.encode("utf-8", "surrogatepass"))
            if size > limits.max_output_bytes:
                raise _LimitExceeded(f"the output is larger than the limit "
                                     f"({limits.max_output_bytes} bytes)", too_large=True)
            _tick()
            out.append(chunk)
    except _LimitExceeded as exc:
        raise (PayloadTooLarge if exc.too_large else InvalidInput)(exc.detail) from None
    except SecurityError as exc:
        raise InvalidInput(f"the template tried something not allowed: {exc}") from None
    except TemplateError as exc:
        raise InvalidInput(f"the template failed: {exc}") from None
    except MemoryError:
        raise PayloadTooLarge("the template needed too much memory") from None
    except Exception as exc:  # any failure of tenant code is a refusal
        raise InvalidInput(f"the template failed ({type(exc).__name__}: {exc})"[:300]) from None
    finally:
        _BUDGET.reset(token)
    return "".join(out)


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


# The shipped defaults are ours: their limits are only a safety net against huge data.
DEFAULT_LIMITS = Limits(max_source_bytes=1 << 20, max_output_bytes=32 << 20,
                        render_timeout_s=10.0)
_log = logging.getLogger(__name__)


def render_or_default(kind: str, source: str | None, context: Mapping[str, Any], *,
                      log: logging.Logger = _log, limits: Limits = LIMITS) -> str:
    """Render a tenant's stored template (validated at save) with real data; if it fails on
    that data or loses a required value (the link, the code), render the shipped default
    instead -- the mail must go out either way. Used by every renderer of tenant templates
    (notify's notifications, ingest's placeholders, retrieve's code mails). Only the error
    class is logged: an error message could quote the data."""
    if source is not None:
        try:
            out = render_limited(compile_checked(kind, source), context)
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
# submission's placeholder: the toolbar markers live here, outside the tenant's reach, so a
# toolbar finds the same markers in both.
_FRAME_TEXT = """{{ body }}
Secure-Message-Id: {{ message_id }}
Secure-Message-Url: {{ url }}
"""
_FRAME_HTML = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="secure-message-id" content="{{ message_id }}">
<meta name="secure-message-url" content="{{ url }}">
<title>{{ subject }}</title>
</head>
<body data-secure-message-id="{{ message_id }}" data-secure-message-url="{{ url }}">
{{ body }}
<span style="display:none" class="secure-message-marker">Secure-Message-Id: {{ message_id }}</span>
</body>
</html>
"""


def message_url(public_url: str, tenant_id: str, message_id: str) -> str:
    """The link in every notification and placeholder (it grants nothing by itself)."""
    return f"{public_url.rstrip('/')}/m/{tenant_id}/{message_id}"


@functools.cache
def _frame_templates() -> tuple[Any, Any]:
    from jinja2 import Environment, StrictUndefined

    text_env = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                           keep_trailing_newline=True, autoescape=False)  # noqa: S701 -- plain text
    html_env = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                           keep_trailing_newline=True, autoescape=True)
    return text_env.from_string(_FRAME_TEXT), html_env.from_string(_FRAME_HTML)


def render_frames(*, text_body: str, html_body: str, message_id: str, url: str,
                  subject: str) -> tuple[str, str]:
    """(text, html) of a notification: the rendered bodies inside the marker frames -- the one
    place the toolbar markers are written (notify's emails and ingest's placeholders).

    ``html_body`` must already be safe HTML (a sandbox render autoescapes every value)."""
    from markupsafe import Markup

    text_frame, html_frame = _frame_templates()
    frame = {"message_id": message_id, "url": url, "subject": subject}
    text = text_frame.render(frame, body=text_body)
    html = html_frame.render(frame, body=Markup(html_body))  # noqa: S704
    return text, html
