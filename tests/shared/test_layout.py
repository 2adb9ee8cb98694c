"""The tree stays easy to find one's way in (issue 16): no import circles inside the product
code, and no module in services/ or shared/ over 400 lines without a reason at its top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = ["shared", "services/ingest", "services/store", "services/notify",
           "services/retrieve", "toolbar"]
MAX_LINES = 400
REASON = "# Over 400 lines:"  # e.g. "# Over 400 lines: one state machine, read top to bottom"


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for member in MEMBERS:
        base = ROOT / member
        for f in (base / "secmsg").rglob("*.py"):
            parts = list(f.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the product modules it imports, ``if TYPE_CHECKING:`` imports included (a
    circle hidden from the interpreter is still a circle for the reader)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, node.module] if node.module else up)
                else:
                    base = node.module or ""
                subs = {f"{base}.{a.name}" for a in node.names} & mods.keys()
                graph[name].update(subs)
                # ``from pkg import submodule`` needs the submodule, not pkg's own names.
                if base in mods and len(subs) < len(node.names):
                    graph[name].add(base)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    assert circles(import_graph(_modules())) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("member", ["shared", "services"])
def test_long_modules_say_why(member: str) -> None:
    unexplained = []
    for f in sorted((ROOT / member).rglob("*.py")):
        lines = f.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any(line.startswith(REASON) for line in lines[:3]):
            unexplained.append(f"{f.relative_to(ROOT)} ({len(lines)} lines)")
    assert unexplained == [], (
        f"over {MAX_LINES} lines: split along a real seam, or start the file with "
        f"'{REASON} <why>'")
