"""The import graph of the project's own modules, read with `ast` (nothing is imported).

Two rules (docs/DESIGN.md "Layout"):
1. No import circle between modules, counting every import a module names:
   at the top, inside functions, and under TYPE_CHECKING (a circle that is
   harmless today turns into a partially-initialised-module error as soon as
   someone moves an import to the top).
2. The client tools (vggclient/) reach the server only through its embedding
   entry point, the package `service.core` itself: `import service.core` or
   `from service.core import X` where X is not a submodule. Any other
   `service` module, `service.core.<submodule>` included, is an internal.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "service", "vggclient", "vggcommon", "vggserve_cli", "loadtest", "protos")
CLIENT = "vggclient"
ENTRY_POINT = "service.core"

# Known violations on main when this test was written, each fixed by another
# branch in flight. Each entry names the modules involved; the lead empties
# these once those branches are merged. Anything not listed fails the test.
# Import circles: the set of modules of one circle.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()
# vggclient module -> the server-internal module it imports.
KNOWN_CLIENT_IMPORTS: frozenset[tuple[str, str]] = frozenset()

Graph = dict[str, set[str]]


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the given packages."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name the module imports, anywhere in its body.

    `from a import b` yields `a.b` (b may be a submodule) and `a`; resolving
    against the known modules picks the right one.
    """
    tree = ast.parse(path.read_text(), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # `from . import x` in a.b.c is a.b; each further dot one level up.
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                yield f"{base}.{alias.name}" if alias.name != "*" else base
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value  # importlib.import_module("a.b"): an import all the same


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module `name` lands in: itself, or its nearest known parent."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """module -> the project modules it imports (outside modules are left out)."""
    files = module_files(root, packages)
    graph: Graph = {}
    for module, path in files.items():
        targets = {_resolve(name, files) for name in _imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One circle per strongly connected group of modules, as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_in(group, graph) for group in sorted(groups, key=min)]


def _circle_in(group: set[str], graph: Graph) -> list[str]:
    """A path start -> ... -> start inside one strongly connected group (breadth first)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not a circle")  # Tarjan said it was


def client_internals(graph: Graph, client: str = CLIENT) -> set[tuple[str, str]]:
    """(client module, server module) for every import of the server but its entry point."""
    return {
        (module, target)
        for module, targets in graph.items()
        if module == client or module.startswith(f"{client}.")
        for target in targets
        if (target == "service" or target.startswith("service.")) and target != ENTRY_POINT
    }


def _show_cycles(found: Iterable[list[str]]) -> str:
    return "\n".join(" -> ".join(circle) for circle in found)


# --- the project --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(ROOT, PACKAGES)


def test_the_graph_sees_every_package(graph: Graph) -> None:
    # A wrong root or package name would make every check below pass on nothing.
    for package in PACKAGES:
        assert package in graph, f"no {package}/__init__.py under {ROOT}"
    assert "protos.vggserve.v1.classifier_pb2" in graph["vggclient.client"]
    assert "service.core.errors" in graph["service.core.dataplane"]


def test_no_new_import_circle(graph: Graph) -> None:
    new = [c for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import circles between modules (break each one):\n" + _show_cycles(new)


def test_vggclient_imports_the_server_only_through_service_core(graph: Graph) -> None:
    new = sorted(client_internals(graph) - KNOWN_CLIENT_IMPORTS)
    assert not new, (
        f"vggclient may import the server only as `{ENTRY_POINT}` "
        f"(`import {ENTRY_POINT}` or `from {ENTRY_POINT} import Name`); these import internals:\n"
        + "\n".join(f"{module} imports {target}" for module, target in new)
    )


def test_the_allow_lists_hold_only_violations_that_still_exist(graph: Graph) -> None:
    # A fixed violation left on a list would let it come back unnoticed.
    stale_cycles = KNOWN_CYCLES - {frozenset(c) for c in cycles(graph)}
    stale_imports = KNOWN_CLIENT_IMPORTS - client_internals(graph)
    assert not stale_cycles and not stale_imports, (
        "fixed: remove from tests/test_imports.py "
        f"KNOWN_CYCLES {sorted(map(sorted, stale_cycles))}, "
        f"KNOWN_CLIENT_IMPORTS {sorted(stale_imports)}"
    )


# --- the checks themselves, on a synthetic tree ------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_through_function_and_type_checking_imports_is_found(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from . import b\n    return b\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.c import C\n"
            ),
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "import importlib\nA = importlib.import_module('pkg.a')\n",
            "pkg/d.py": "import os\nfrom pkg import a\n",  # imports into the circle, not part of it
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert _show_cycles(cycles(graph)) == "pkg.a -> pkg.b -> pkg.sub.c -> pkg.a"


def test_relative_imports_resolve_from_packages_and_modules(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub import leaf\n",
            "pkg/top.py": "",
            "pkg/sub/__init__.py": "from .. import top\n",
            "pkg/sub/leaf.py": "from ..top import name\nfrom . import other\n",
            "pkg/sub/other.py": "from pkg.sub import *\n",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub"] == {"pkg.top"}
    assert graph["pkg.sub.leaf"] == {"pkg.top", "pkg.sub.other"}
    assert graph["pkg.sub.other"] == {"pkg.sub"}
    assert cycles(graph) == []


def test_only_the_entry_point_itself_is_open_to_the_client(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "service/__init__.py": "",
            "service/cli.py": "",
            "service/core/__init__.py": "from .errors import Error\n",
            "service/core/errors.py": "class Error(Exception): ...\n",
            "vggclient/__init__.py": "",
            "vggclient/good.py": "import service.core\nfrom service.core import Error\n",
            "vggclient/sub.py": "def f():\n    from service.core import errors\n",
            "vggclient/deep.py": "from service.core.errors import Error\n",
            "vggclient/cli.py": "from service import cli\n",
            "vggclient/pkg.py": "import service\n",
        },
    )
    found = client_internals(import_graph(tmp_path, ["service", "vggclient"]))
    assert found == {
        ("vggclient.sub", "service.core.errors"),
        ("vggclient.deep", "service.core.errors"),
        ("vggclient.cli", "service.cli"),
        ("vggclient.pkg", "service"),
    }
