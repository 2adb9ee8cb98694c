"""Who reads and who writes each MongoDB collection, found in the source (no imports run).

A small flow-insensitive data-flow pass over the ASTs of ``services/*`` and ``shared/``:

* collection names come from the constants of ``secmsg.shared.mongo`` (or any module-level
  alias of them, tuples of them, ``+`` of strings), resolved through imports between modules;
* a *database* is whatever is annotated ``AsyncDatabase`` / obtained from a client by
  ``client[...]`` / ``get_database``; a *collection* is ``db[<name>]``, ``db.get_collection(
  <name>)`` or ``db.<name>``;
* values flow through locals, ``self.<attr>`` (per class), module globals, ``for`` targets,
  function returns, and into parameters from every call site in the scanned code (so a helper
  that takes ``col`` and writes it is attributed to the collections its callers pass);
* a write is a call of a write method on a collection; a collection that cannot be resolved
  to a known name is reported as *unresolved*, never silently dropped.

Variable names play no part: ``self._col``, ``col`` or ``x`` are all followed the same way.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

WRITE_METHODS = frozenset({
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "bulk_write", "find_one_and_update", "find_one_and_replace",
    "find_one_and_delete", "create_index", "create_indexes", "drop_index", "drop_indexes",
    "drop", "rename",
})
# Methods of a database object; any other attribute of one is a collection (``db.tenants``).
DB_METHODS = frozenset({
    "command", "cursor_command", "get_collection", "list_collection_names", "list_collections",
    "create_collection", "drop_collection", "aggregate", "watch", "with_options", "client",
    "name", "codec_options", "read_preference", "write_concern", "read_concern",
    "validate_collection", "dereference",
})
MONGO_MODULE = "secmsg.shared.mongo"

# Abstract values: ("str", s) a string, ("cname", s) a string from the constants of
# ``secmsg.shared.mongo`` (or built from one), ("col", name) a collection, ("col?", where) a
# collection whose name did not resolve, ("db",) a database, ("client",) a client,
# ("mod", dotted) a module, ("fn", qualname) a function, ("cls", qualname) a class.
Value = tuple[str, ...]
Values = frozenset[Value]
NONE: Values = frozenset()
_STRS = ("str", "cname")


@dataclass(frozen=True)
class Access:
    service: str
    collection: str  # a name, or "?" when it did not resolve
    write: bool
    method: str
    where: str  # path:line


def service_of(rel: Path) -> str:
    parts = rel.parts
    if parts[0] == "services":
        return parts[1]
    return parts[0]  # "shared"


def module_name(rel: Path) -> str:
    # services/<svc>/secmsg/<svc>/x.py and shared/secmsg/shared/x.py -> secmsg.<...>.x
    parts = list(rel.with_suffix("").parts)
    i = parts.index("secmsg")
    mod = parts[i:]
    if mod[-1] == "__init__":
        mod = mod[:-1]
    return ".".join(mod)


@dataclass
class _Fn:
    qual: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    module: str
    cls: str | None  # qualname of the enclosing class
    params: list[str]
    is_method: bool


@dataclass
class Program:
    """The scanned modules and the facts found about them (grown to a fixed point)."""

    sources: dict[str, tuple[Path, ast.Module]]  # module name -> (relative path, tree)
    globals_: dict[str, dict[str, Values]] = field(default_factory=dict)
    imports: dict[str, dict[str, Value]] = field(default_factory=dict)  # local name -> target
    fns: dict[str, _Fn] = field(default_factory=dict)
    classes: dict[str, dict[str, str]] = field(default_factory=dict)  # class -> method -> fn
    class_attrs: dict[str, dict[str, Values]] = field(default_factory=dict)
    locals_: dict[str, dict[str, Values]] = field(default_factory=dict)  # fn -> name -> values
    returns: dict[str, Values] = field(default_factory=dict)
    changed: bool = False
    # Set once everything that resolves has: from then on what does not resolve is "col?".
    final: bool = False
    walked: dict[str, list[ast.AST]] = field(default_factory=dict)
    _names: frozenset[str] | None = None

    # --- set-up ---

    def index(self) -> None:
        for mod, (_, tree) in self.sources.items():
            self.globals_.setdefault(mod, {})
            self.imports[mod] = {}
            for node in tree.body:
                self._index_stmt(mod, node, cls=None)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        self.imports[mod][a.asname or a.name.split(".")[0]] = (
                            ("mod", a.name) if a.asname else ("mod", a.name.split(".")[0]))
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    for a in node.names:
                        self.imports[mod][a.asname or a.name] = ("ref", node.module, a.name)

    def _index_stmt(self, mod: str, node: ast.stmt, *, cls: str | None) -> None:
        if isinstance(node, ast.ClassDef):
            qual = f"{mod}:{node.name}" if cls is None else f"{cls}.{node.name}"
            self.classes.setdefault(qual, {})
            self.class_attrs.setdefault(qual, {})
            if cls is None:
                self.globals_[mod][node.name] = frozenset({("cls", qual)})
            for sub in node.body:
                self._index_stmt(mod, sub, cls=qual)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            qual = f"{cls or mod}.{node.name}" if cls else f"{mod}:{node.name}"
            args = node.args
            params = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
            is_method = cls is not None and not any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
            self.fns[qual] = _Fn(qual, node, mod, cls, params, is_method)
            if cls is None:
                self.globals_[mod][node.name] = frozenset({("fn", qual)})
            else:
                self.classes[cls][node.name] = qual

    # --- evaluation ---

    def _resolve_ref_plain(self, module: str, name: str) -> Values:
        return self.globals_.get(module, {}).get(name, NONE)

    def _resolve_ref(self, module: str, name: str, seen: frozenset[str] = frozenset()
                     ) -> Values:
        key = f"{module}.{name}"
        if key in seen:
            return NONE
        if key in self.sources:
            return frozenset({("mod", key)})
        if module == MONGO_MODULE:
            # A name from the constants: a string used as a key becomes a collection.
            return frozenset(("cname", v[1]) if v[0] == "str" else v
                             for v in self._resolve_ref_plain(module, name))
        if module in self.sources:
            got = self.globals_.get(module, {}).get(name)
            if got:
                return got
            imp = self.imports.get(module, {}).get(name)
            if imp is not None:
                return self._target(imp, seen | {key})
        if module == "pymongo" and name == "AsyncMongoClient":
            return frozenset({("clientcls",)})
        return NONE

    def _target(self, target: Value, seen: frozenset[str] = frozenset()) -> Values:
        if target[0] == "ref":
            return self._resolve_ref(target[1], target[2], seen)
        if target[0] == "mod" and target[1] not in self.sources:
            # `import secmsg.shared` style: the package itself is not scanned as a module.
            return frozenset({target})
        return frozenset({target})

    def lookup(self, fn: _Fn | None, mod: str, name: str) -> Values:
        if fn is not None:
            got = self.locals_.get(fn.qual, {}).get(name)
            if got is not None:
                return got
        got = self.globals_.get(mod, {}).get(name)
        if got:
            return got
        imp = self.imports.get(mod, {}).get(name)
        if imp is not None:
            return self._target(imp)
        return NONE

    def eval(self, node: ast.expr | None, fn: _Fn | None, mod: str) -> Values:
        if node is None:
            return NONE
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return frozenset({("str", node.value)})
        if isinstance(node, ast.Name):
            return self.lookup(fn, mod, node.id)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, fn, mod)
        if isinstance(node, ast.Subscript):
            base = self.eval(node.value, fn, mod)
            out: set[Value] = set()
            if ("client",) in base:
                out.add(("db",))
            keys = self.eval(node.slice, fn, mod)
            if ("db",) in base:
                out |= self._collections(keys, node, mod)
            else:  # an untyped database: a key from the constants still names a collection
                out |= {("col", k[1]) for k in keys
                        if k[0] == "cname" and k[1] in self.collection_names()}
            return frozenset(out)
        if isinstance(node, ast.Call):
            return self._call(node, fn, mod)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.eval(node.left, fn, mod), self.eval(node.right, fn, mod)
            return frozenset(("cname" if "cname" in (a[0], b[0]) else "str", a[1] + b[1])
                             for a in left for b in right
                             if a[0] in _STRS and b[0] in _STRS)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return frozenset().union(*(self.eval(e, fn, mod) for e in node.elts))
        if isinstance(node, ast.IfExp):
            return self.eval(node.body, fn, mod) | self.eval(node.orelse, fn, mod)
        if isinstance(node, ast.BoolOp):
            return frozenset().union(*(self.eval(e, fn, mod) for e in node.values))
        if isinstance(node, ast.NamedExpr):
            return self.eval(node.value, fn, mod)
        if isinstance(node, ast.Starred):
            return self.eval(node.value, fn, mod)
        return NONE

    def collection_names(self) -> frozenset[str]:
        """``secmsg.shared.mongo.COLLECTIONS``: every collection the services use."""
        if self._names is None or not self._names:
            self._names = frozenset(
                v[1] for v in self._resolve_ref_plain(MONGO_MODULE, "COLLECTIONS")
                if v[0] == "str")
        return self._names

    def _collections(self, keys: Values, node: ast.AST, mod: str) -> set[Value]:
        names = {k[1] for k in keys if k[0] in _STRS}
        if not names:
            if not self.final:  # it may still resolve in a later round
                return set()
            return {("col?", f"{self.sources[mod][0]}:{getattr(node, 'lineno', 0)}")}
        return {("col", n) for n in names}

    def _attribute(self, node: ast.Attribute, fn: _Fn | None, mod: str) -> Values:
        if (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                and fn is not None and fn.cls is not None and fn.is_method):
            return self.class_attrs.get(fn.cls, {}).get(node.attr, NONE)
        base = self.eval(node.value, fn, mod)
        out: set[Value] = set()
        for v in base:
            if v[0] == "mod":
                out |= self._resolve_ref(v[1], node.attr)
            elif v[0] == "cls":
                out |= self.class_attrs.get(v[1], {}).get(node.attr, NONE)
        if ("db",) in base and node.attr not in DB_METHODS:
            out.add(("col", node.attr))
        return frozenset(out)

    def _callee(self, node: ast.Call, fn: _Fn | None, mod: str) -> list[tuple[_Fn, bool]]:
        """(function, whether the call passes the instance implicitly)."""
        func = node.func
        out: list[tuple[_Fn, bool]] = []
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "self" and fn is not None and fn.cls is not None):
            qual = self.classes.get(fn.cls, {}).get(func.attr)
            if qual is not None:
                out.append((self.fns[qual], self.fns[qual].is_method))
            return out
        for v in self.eval(func, fn, mod):
            if v[0] == "fn" and v[1] in self.fns:
                out.append((self.fns[v[1]], False))
            elif v[0] == "cls":
                init = self.classes.get(v[1], {}).get("__init__")
                if init is not None:
                    out.append((self.fns[init], True))
        return out

    def _call(self, node: ast.Call, fn: _Fn | None, mod: str) -> Values:
        func = node.func
        out: set[Value] = set()
        if isinstance(func, ast.Attribute):
            base = self.eval(func.value, fn, mod)
            if func.attr == "get_collection" and node.args:
                keys = self.eval(node.args[0], fn, mod)
                if ("db",) in base:
                    out |= self._collections(keys, node, mod)
                else:
                    out |= {("col", k[1]) for k in keys
                            if k[0] == "cname" and k[1] in self.collection_names()}
            if ("client",) in base and func.attr in ("get_database", "get_default_database"):
                out.add(("db",))
            if func.attr == "with_options":
                out |= {v for v in base if v[0] in ("col", "col?")}
        called = self.eval(func, fn, mod)
        if ("clientcls",) in called:
            out.add(("client",))
        for callee, _ in self._callee(node, fn, mod):
            out |= self.returns.get(callee.qual, NONE)
        return frozenset(out)

    # --- fixed point ---

    def _set(self, table: dict[str, Values], key: str, values: Values) -> None:
        old = table.get(key, NONE)
        new = old | values
        if new != old:
            table[key] = new
            self.changed = True

    def _bind(self, target: ast.expr, values: Values, fn: _Fn | None, mod: str) -> None:
        if isinstance(target, ast.Name):
            table = (self.locals_.setdefault(fn.qual, {}) if fn is not None
                     else self.globals_.setdefault(mod, {}))
            self._set(table, target.id, values)
        elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
              and target.value.id == "self" and fn is not None and fn.cls is not None):
            self._set(self.class_attrs.setdefault(fn.cls, {}), target.attr, values)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._bind(elt, values, fn, mod)

    def _annotation(self, ann: ast.expr | None) -> Values:
        if ann is None:
            return NONE
        text = ast.unparse(ann)
        if "AsyncDatabase" in text:
            return frozenset({("db",)})
        if "AsyncMongoClient" in text:
            return frozenset({("client",)})
        return NONE

    def _pass(self) -> None:
        for mod, (_, tree) in self.sources.items():
            for node in tree.body:
                self._stmt_globals(node, mod)
        for f in self.fns.values():
            args = f.node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                ann = self._annotation(a.annotation)
                if ann:
                    self._set(self.locals_.setdefault(f.qual, {}), a.arg, ann)
            for node in self._nodes(f):
                self._visit(node, f, f.module)
        if self.final:
            for f in self.fns.values():
                self._unresolved_params(f)

    def _nodes(self, f: _Fn) -> list[ast.AST]:
        """The nodes of ``f`` that bind or call (walked once, not every round)."""
        got = self.walked.get(f.qual)
        if got is None:
            got = self.walked[f.qual] = [
                n for n in ast.walk(f.node)
                if isinstance(n, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.For
                              | ast.AsyncFor | ast.comprehension | ast.withitem | ast.Return
                              | ast.Call)]
        return got

    def _stmt_globals(self, node: ast.stmt, mod: str) -> None:
        if isinstance(node, ast.Assign):
            values = self.eval(node.value, None, mod)
            for t in node.targets:
                self._bind(t, values, None, mod)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._bind(node.target, self.eval(node.value, None, mod), None, mod)
        elif isinstance(node, ast.ClassDef):
            qual = f"{mod}:{node.name}"
            for sub in node.body:
                targets = (sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                           if isinstance(sub, ast.AnnAssign) and sub.value is not None else [])
                if targets:
                    assert isinstance(sub, ast.Assign | ast.AnnAssign)
                    values = self.eval(sub.value, None, mod)
                    for t in targets:
                        if isinstance(t, ast.Name):
                            self._set(self.class_attrs.setdefault(qual, {}), t.id, values)

    def _visit(self, node: ast.AST, fn: _Fn, mod: str) -> None:
        if isinstance(node, ast.Assign):
            values = self.eval(node.value, fn, mod)
            for t in node.targets:
                self._bind(t, values, fn, mod)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._bind(node.target, self.eval(node.value, fn, mod) | self._annotation(
                node.annotation), fn, mod)
        elif isinstance(node, ast.AugAssign):
            self._bind(node.target, self.eval(node.value, fn, mod), fn, mod)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            self._bind(node.target, self.eval(node.iter, fn, mod), fn, mod)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._bind(node.optional_vars, self.eval(node.context_expr, fn, mod), fn, mod)
        elif isinstance(node, ast.Return) and node.value is not None:
            self._set(self.returns, fn.qual, self.eval(node.value, fn, mod))
        elif isinstance(node, ast.Call):
            for callee, implicit in self._callee(node, fn, mod):
                params = callee.params[1:] if implicit else callee.params
                table = self.locals_.setdefault(callee.qual, {})
                for i, arg in enumerate(node.args):
                    if i < len(params) and not isinstance(arg, ast.Starred):
                        self._set(table, params[i], self.eval(arg, fn, mod))
                for kw in node.keywords:
                    if kw.arg is not None and kw.arg in callee.params:
                        self._set(table, kw.arg, self.eval(kw.value, fn, mod))

    def _unresolved_params(self, f: _Fn) -> None:
        """A parameter annotated as a collection that no call site in the scan feeds."""
        args = f.node.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if a.annotation is not None and "AsyncCollection" in ast.unparse(a.annotation):
                got = self.locals_.get(f.qual, {}).get(a.arg, NONE)
                if not any(v[0] == "col" for v in got):
                    where = f"{self.sources[f.module][0]}:{a.lineno}"
                    self._set(self.locals_.setdefault(f.qual, {}), a.arg,
                              frozenset({("col?", where)}))

    def solve(self) -> None:
        self.index()
        for final in (False, True):
            self.final = final
            for _ in range(30):
                self.changed = False
                self._pass()
                if not self.changed:
                    break
            else:
                raise RuntimeError("collection analysis did not reach a fixed point")

    # --- results ---

    def accesses(self) -> Iterator[Access]:
        for qual, f in self.fns.items():
            del qual
            path = self.sources[f.module][0]
            svc = service_of(path)
            for node in ast.walk(f.node):
                yield from self._access(node, f, path, svc)
        for mod, (path, tree) in self.sources.items():
            svc = service_of(path)
            for stmt in tree.body:
                if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    for node in ast.walk(stmt):
                        yield from self._access(node, None, path, svc, mod=mod)

    def _access(self, node: ast.AST, fn: _Fn | None, path: Path, svc: str,
                mod: str | None = None) -> Iterator[Access]:
        mod = fn.module if fn is not None else (mod or "")
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            # A typed read view (a class with ``COLLECTION`` from the constants) named here.
            for v in self.eval(node, fn, mod):
                if v[0] == "cls":
                    for c in self.class_attrs.get(v[1], {}).get("COLLECTION", NONE):
                        if c[0] == "cname":
                            yield Access(svc, c[1], False, "view", where)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            base = self.eval(node.func.value, fn, mod)
            if method == "drop_collection" and ("db",) in base and node.args:
                for c in self._collections(self.eval(node.args[0], fn, mod), node, mod):
                    yield Access(svc, c[1] if c[0] == "col" else "?", True, method, where)
            for v in base:
                if v[0] in ("col", "col?"):
                    yield Access(svc, v[1] if v[0] == "col" else "?", method in WRITE_METHODS,
                                 method, where if v[0] == "col" else v[1])


def scan(root: Path, extra: dict[str, str] | None = None) -> list[Access]:
    """Every collection access in ``root``'s services and shared code. ``extra`` maps a
    relative path to source text added to (or replacing) the files on disk (tests)."""
    sources: dict[str, tuple[Path, ast.Module]] = {}
    files: dict[Path, str] = {}
    for path in _product_files(root):
        files[path.relative_to(root)] = path.read_text()
    for rel, text in (extra or {}).items():
        files[Path(rel)] = text
    for rel, text in files.items():
        sources[module_name(rel)] = (rel, _parse(text, str(rel)))
    prog = Program(sources)
    prog.solve()
    return sorted(set(prog.accesses()), key=lambda a: (a.collection, a.service, a.where))


@functools.cache
def _parse(text: str, filename: str) -> ast.Module:
    # Trees are never changed by the analysis, so a scan with extra files reuses the others.
    return ast.parse(text, filename=filename)


def _product_files(root: Path) -> Iterable[Path]:
    yield from sorted((root / "shared").rglob("*.py"))
    for svc in sorted((root / "services").iterdir()):
        yield from sorted(svc.rglob("secmsg/**/*.py"))


def writers(accesses: Iterable[Access]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a in accesses:
        if a.write:
            out[a.collection].add(a.service)
    return dict(out)


def readers(accesses: Iterable[Access]) -> dict[str, set[str]]:
    """Services that touch a collection without writing it."""
    acc = list(accesses)
    w = writers(acc)
    out: dict[str, set[str]] = defaultdict(set)
    for a in acc:
        if a.service not in w.get(a.collection, set()):
            out[a.collection].add(a.service)
    return dict(out)
