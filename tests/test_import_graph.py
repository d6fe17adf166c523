"""The project's own imports: no circle anywhere, and the layers point down.

Every `.py` of the shipped packages and top-level modules (`supervisor.py`, `runtime.py`) is parsed (never imported); every
`import` and `from … import` counts, at module level or inside a function, and each is resolved
to the project module it names. A circle is reported as the chain of modules that closes it,
with the file and line of each import.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    line: int


def _setuptools() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config


def shipped_packages() -> list[str]:
    found = _setuptools()["packages"]
    assert isinstance(found, dict)
    return sorted(p.rstrip("*") for p in found["find"]["include"])


def shipped_modules() -> list[str]:
    """The top-level modules shipped beside the packages (`py-modules`)."""
    names = _setuptools()["py-modules"]
    assert isinstance(names, list)
    return sorted(str(n) for n in names)


def project_modules() -> dict[str, Path]:
    """Dotted module name → file, for the top-level modules and every module of the shipped packages."""
    modules = {name: ROOT / f"{name}.py" for name in shipped_modules()}
    for package in shipped_packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, known: Mapping[str, Path]) -> str | None:
    """The longest prefix of `name` that is a project module (`planner.tools.Tool` → `planner.tools`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, source: str, known: Mapping[str, Path]) -> list[Edge]:
    """The project modules `source` imports, anywhere in the file (functions included)."""
    is_package = known[module].name == "__init__.py"
    edges = []
    for node in ast.walk(ast.parse(source)):
        names: Iterable[str]
        if isinstance(node, ast.Import):
            names = (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
            names = (f"{base}.{alias.name}" if base else alias.name for alias in node.names)
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                edges.append(Edge(module, target, node.lineno))
    return edges


def import_graph() -> dict[str, list[Edge]]:
    known = project_modules()
    return {module: imports_of(module, path.read_text(), known) for module, path in known.items()}


def circles(graph: Mapping[str, list[Edge]]) -> list[list[Edge]]:
    """One closed chain of imports for every strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for edge in graph.get(module, []):
            if edge.target not in index:
                visit(edge.target)
                low[module] = min(low[module], low[edge.target])
            elif edge.target in on_stack:
                low[module] = min(low[module], index[edge.target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_chain(group, graph) for group in sorted(groups)]


def _chain(group: list[str], graph: Mapping[str, list[Edge]]) -> list[Edge]:
    """The shortest circle through the group's first module, as the imports that make it."""
    members, start = set(group), group[0]
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for edge in graph[module]:
                if edge.target == start:
                    return [*paths[module], edge]
                if edge.target in members and edge.target not in paths:
                    paths[edge.target] = [*paths[module], edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"{group} is not a circle")


def describe(chain: list[Edge]) -> str:
    known = project_modules()
    steps = [f"{e.source} -> {e.target} ({known[e.source].relative_to(ROOT)}:{e.line})" for e in chain]
    return "circle: " + ", ".join(steps)


# (importing packages, packages they must never import, why)
LAYERS: list[tuple[frozenset[str], frozenset[str], str]] = [
    (frozenset({"store", "planner", "grants", "upstream"}), frozenset({"actors", "http_api"}),
     "the runtime and the HTTP front sit above them"),
    (frozenset({"planner"}), frozenset({"store", "upstream", "actors"}),
     "the planner is pure: the database and the network are the shell's"),
    (frozenset({"upstream"}), frozenset({"store", "supervisor"}),
     "network clients sit beside the store, below the runtime that wires them"),
    (frozenset({"store"}), frozenset({"upstream"}), "the store sits beside the network clients"),
    (frozenset({"actors"}), frozenset({"http_api"}), "the HTTP front sits above the runtime"),
    (frozenset({"actors", "http_api", "store", "upstream", "planner", "grants", "observability", "settings"}),
     frozenset({"supervisor", "runtime", "demo"}), "the entry, the runtime's assembly and the demo command sit on top"),
    (frozenset({"runtime", "demo"}), frozenset({"supervisor"}), "the process entry imports them, never the reverse"),
    (frozenset({"grants", "observability", "settings"}),
     frozenset({"actors", "http_api", "store", "upstream", "planner", "supervisor", "runtime", "demo"}),
     "the foundation imports no other part of the project"),
]

#: what "pure" rules out for planner/: sockets and HTTP, the event loop and its clock, the
#: wall clock, randomness, logging, the environment and the database
EFFECTFUL = frozenset({"socket", "ssl", "select", "selectors", "asyncio", "trio", "trio_asyncio", "httpx", "httpcore",
                       "h11", "time", "random", "secrets", "logging", "os", "subprocess", "asyncpg", "threading"})


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_the_graph_finds_each_kind_of_import() -> None:
    known = {name: Path(f"{name.replace('.', '/')}.py") for name in ("a", "a.b", "a.b.c", "d")}
    known["a"] = Path("a/__init__.py")
    source = ("import a.b.c\nfrom a import b\nfrom a.b.c import Thing\nimport os\n"
              "def f():\n    from d import x\n    from . import b\n")
    edges = imports_of("a.b.c", source, known) + imports_of("a", "from .b import c\nfrom . import d\n", known)
    assert [(e.source, e.target, e.line) for e in edges] == [
        ("a.b.c", "a.b", 2), ("a.b.c", "d", 6), ("a.b.c", "a.b", 7), ("a", "a.b.c", 1)]


def test_a_circle_is_found_and_named() -> None:
    graph = {"a": [Edge("a", "b", 1)], "b": [Edge("b", "c", 2), Edge("b", "d", 3)], "c": [Edge("c", "a", 4)],
             "d": []}
    assert [[(e.source, e.target) for e in chain] for chain in circles(graph)] == [
        [("a", "b"), ("b", "c"), ("c", "a")]]
    assert circles({"a": [Edge("a", "b", 1)], "b": []}) == []


def test_every_shipped_package_is_read() -> None:
    packages = {_top(m) for m in project_modules()}
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk | {"supervisor", "runtime"} <= packages
    assert len(import_graph()) > 80


def test_there_is_no_import_circle() -> None:
    found = [describe(chain) for chain in circles(import_graph())]
    assert found == [], "\n".join(found)


def test_the_layers_point_down() -> None:
    broken = [f"{e.source} imports {e.target} ({why})"
              for module, edges in import_graph().items() for e in edges
              for importers, forbidden, why in LAYERS
              if _top(module) in importers and _top(e.target) in forbidden]
    assert broken == [], "\n".join(broken)


def test_the_planner_is_pure() -> None:
    impure = []
    for module, path in project_modules().items():
        if _top(module) != "planner":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            impure += [f"{module} imports {n} (line {node.lineno})" for n in names if _top(n) in EFFECTFUL]
    assert impure == [], "\n".join(impure)
