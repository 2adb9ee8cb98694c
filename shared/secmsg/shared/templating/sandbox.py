"""The sandbox every tenant template runs in, and the limits it runs within.

A template runs in Jinja2's ``ImmutableSandboxedEnvironment`` (autoescape on for HTML kinds,
off for text kinds, ``StrictUndefined``, no loader) and is checked statically on its parse
tree when it is compiled (:func:`compile_template`): syntax, only the kind's documented
variables, no private (``_``) attributes or items, no ``str.format``, only an allow-list of
filters, no include/import/extends, and the kind's required variables must be used.

Limits are enforced cooperatively while rendering (:func:`render_limited`): output size and
elapsed time are checked after every output chunk (``Template.generate()``), every loop
iteration (each ``for`` iterable is wrapped at compile time), every call, filter, ``~``
concatenation and the ``* ** + %`` operators, and those operations refuse up front results
that would exceed the output limit (e.g. ``'x' * 10**9``) rather than allocate them. Calls are
restricted to macros, ``range``, ``loop.cycle``/``changed``, date formatting and a few
length-preserving string methods.
"""

from __future__ import annotations

import contextvars
import time
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache, update_wrapper
from typing import TYPE_CHECKING, Any

from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
)
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import pass_eval_context
from jinja2.visitor import NodeTransformer

from secmsg.shared.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    from secmsg.shared.templating.kinds import Kind

__all__ = ["ALLOWED_FILTERS", "DEFAULT_LIMITS", "LIMITS", "CheckedTemplate", "Limits",
           "compile_template", "render_limited"]


@dataclass(frozen=True)
class Limits:
    max_source_bytes: int = 32 * 1024
    max_output_bytes: int = 256 * 1024
    render_timeout_s: float = 0.5


LIMITS = Limits()


# The shipped defaults are ours: their limits are only a safety net against huge data.
DEFAULT_LIMITS = Limits(max_source_bytes=1 << 20, max_output_bytes=32 << 20,
                        render_timeout_s=10.0)


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
        # The render's own CPU time (this thread's), not the wall clock: the limit is what the
        # tenant's code may spend (docs/configuration.md), and on a busy node a legal template
        # must not fall back to the default because other threads or processes had the CPU
        # (tests/notify/test_render_pool.py failed so under load). A sandboxed template cannot
        # sleep or wait on I/O, so its wall time is its CPU time plus waiting for a core.
        self.deadline = time.thread_time() + self.limits.render_timeout_s


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "secmsg_template_budget", default=None)


def _limits() -> Limits:
    budget = _BUDGET.get()
    return budget.limits if budget is not None else LIMITS


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None and time.thread_time() > budget.deadline:
        raise _LimitExceeded(
            f"rendering took longer than {budget.limits.render_timeout_s:g} s of CPU",
            too_large=False)


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
    joined: str = do_join(eval_ctx, items, d)  # a Markup when autoescaping: keep it so
    return joined


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


def compile_template(kind: Kind, source: str) -> CheckedTemplate:
    """Parse, check statically and compile ``source`` as a ``kind`` template in the sandbox,
    or raise ``InvalidInput`` with a sentence naming the problem. (Size limits and the cache
    are the renderer's: :func:`secmsg.shared.templating.compile_checked`.)"""
    env = _env(kind.html)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"syntax error on line {exc.lineno}: {exc.message}") from None
    except (TemplateError, RecursionError, ValueError) as exc:
        raise InvalidInput(f"the template does not parse: {exc}") from None
    _static_check(kind, tree, env)
    tree = _Guards().visit(tree)
    tree.set_environment(env)
    try:
        template = env.from_string(tree)
    except TemplateError as exc:
        raise InvalidInput(f"the template does not compile: {exc}") from None
    except (RecursionError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the template does not compile ({type(exc).__name__})") from None
    return CheckedTemplate(kind.name, template)



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

