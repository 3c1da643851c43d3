"""The package's structure, read from the AST of every module under fedx/.

- imports only point down: the import graph (every import a module makes when it runs, lazy ones
  inside functions included; ``if TYPE_CHECKING:`` blocks left out) has no cycle;
- nothing inside the package imports ``fedx/__init__.py``: it is the public face, not a library;
- only fedx/flower imports flwr, and only fedx/he imports tenseal;
- no module is longer than 800 lines.

Run ``python tests/test_structure.py`` to print the graph's cycles and the longest modules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedx"
MAX_LINES = 800
CONFINED = {"flwr": "fedx.flower", "tenseal": "fedx.he"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The absolute module names that ``name`` imports (fedx modules resolved; others as written)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t in imports_of(name, path, known) if t in known and t != name}
            for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycle() -> None:
    found = cycles(graph())
    assert not found, f"import cycles: {found}"


def test_nothing_inside_the_package_imports_its_init() -> None:
    offenders = sorted(name for name, deps in graph().items() if "fedx" in deps and name != "fedx")
    assert not offenders, f"these modules import fedx/__init__.py: {offenders}"


def test_flwr_and_tenseal_stay_in_their_rooms() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        for target in imports_of(name, path, known):
            top = target.split(".")[0]
            room = CONFINED.get(top)
            if room and not (name == room or name.startswith(room + ".")):
                wrong.append(f"{name} imports {target} (only {room} may)")
    assert not wrong, wrong


def test_no_module_is_longer_than_the_bound() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checks_can_fail() -> None:
    # The cycle finder and the import resolver, on a graph and a module made for them.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    known = modules()
    path = PACKAGE / "cli.py"
    assert "fedx.config" in imports_of("fedx.cli", path, known)


if __name__ == "__main__":
    g = graph()
    print("cycles:", cycles(g) or "none")
    print("import fedx/__init__.py:", sorted(n for n, d in g.items() if "fedx" in d and n != "fedx") or "none")
    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in modules().items()), reverse=True)[:10]
    for n, name in sizes:
        print(f"{n:6d}  {name}")
