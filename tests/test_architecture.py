"""The shape of the core: properties of the package as a whole, checked on its source."""

from __future__ import annotations

import ast
from pathlib import Path

import drasill_cli

PACKAGE = Path(drasill_cli.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imported(
    tree: ast.AST,
    module: str,
    is_package: bool,
    modules: set[str],
    *,
    type_checking: bool = False,
) -> set[str]:
    """Every module of the package `module` imports, at any depth (functions included), except
    imports only made for type checkers (under `if TYPE_CHECKING:`) unless `type_checking`.
    `from pkg import sub` where `pkg.sub` is a module is an import of that module (`pkg` is
    loaded already)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            named = {f"{origin}.{alias.name}" for alias in node.names}
            # `from drasill_cli import agents` imports the module drasill_cli.agents.
            found.update(named & modules)
            if named - modules:
                found.add(origin)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (each edge counts once); with
    `type_checking`, the imports made only for type checkers count too."""
    sources = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        imported = _imported(
            tree, name, path.name == "__init__.py", set(sources), type_checking=type_checking
        )
        graph[name] = {m for m in imported if m in sources and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = pending.pop(0)
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt in done:
                continue
            path.append(nxt)
            on_path.add(nxt)
            stack.append((nxt, sorted(graph[nxt])))
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_core_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "drasill_cli.agents" in graph and "drasill_cli.mesh" in graph  # the walk found them
    cycle = find_cycle(graph)
    groups = all_cycles(graph)
    assert cycle is None, (
        "import cycle: "
        + " -> ".join(cycle)
        + "".join("\nmodules importing each other: " + ", ".join(group) for group in groups)
    )


def test_cycle_finder_finds_a_cycle() -> None:
    """The finder is not blind: a planted cycle is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert all_cycles(graph) == [["a", "b", "c"]]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# ---- Layers --------------------------------------------------------------------------------
#
# cli -> core -> mesh -> storage -> foundation (docs/architecture.md, "Layers"). A module may
# import only modules of its own layer or of lower ones. Every module of the package has its
# layer here, by name or by the package it is in (a new module must be given one). The imports
# checked are the real import statements, at any depth (functions' lazy imports included), and
# those made only for type checkers (`if TYPE_CHECKING:`) as well: they never run, but a type
# that names a higher layer is a dependency on it all the same, and none is needed.

LAYERS = ("foundation", "storage", "mesh", "core", "cli")

# Modules by name; packages (a name ending in ".") hold every module under them.
LAYER_OF = {
    # foundation: values, rules and the config, known to every layer; no mesh, no storage.
    "drasill_cli": "foundation",
    "drasill_cli.errors": "foundation",
    "drasill_cli.clock": "foundation",
    "drasill_cli.names": "foundation",
    "drasill_cli.units": "foundation",
    "drasill_cli.location": "foundation",
    "drasill_cli.config": "foundation",
    "drasill_cli.config_schema": "foundation",
    "drasill_cli.atomicfile": "foundation",
    "drasill_cli.recordmodels": "foundation",
    "drasill_cli.models": "foundation",
    "drasill_cli.lockpaths": "foundation",
    "drasill_cli.liveness": "foundation",
    "drasill_cli.waiting": "foundation",
    "drasill_cli.childenv": "foundation",
    # storage: the interfaces, and the backends that implement them (the registry included).
    "drasill_cli.storage": "storage",
    "drasill_cli.storage.": "storage",
    "drasill_cli.backends": "storage",
    "drasill_cli.backends.": "storage",
    # mesh: an opened backend and its config; the one way up to the backends.
    "drasill_cli.mesh": "mesh",
    # core: the features (the rules), each taking a Mesh.
    "drasill_cli.agenda": "core",
    "drasill_cli.agents": "core",
    "drasill_cli.audit": "core",
    "drasill_cli.bridge": "core",
    "drasill_cli.describe": "core",
    "drasill_cli.hooks": "core",
    "drasill_cli.hooks.decide": "core",
    "drasill_cli.hooks.events": "core",
    "drasill_cli.hooks.identity": "core",
    "drasill_cli.hooks.install": "core",
    "drasill_cli.hooks.patch": "core",
    "drasill_cli.hooks.protocols": "core",
    "drasill_cli.hooks.run": "core",
    "drasill_cli.hooks.settings": "core",
    "drasill_cli.keepalive": "core",
    "drasill_cli.dashboard": "core",
    "drasill_cli.demo": "core",
    "drasill_cli.doctor": "core",
    "drasill_cli.hardware": "core",
    "drasill_cli.hardware_enforcement": "core",
    "drasill_cli.hardware_probes": "core",
    "drasill_cli.lifecycle": "core",
    "drasill_cli.locks": "core",
    "drasill_cli.messages": "core",
    "drasill_cli.onboarding": "core",
    "drasill_cli.presence": "core",
    "drasill_cli.status": "core",
    "drasill_cli.tasks": "core",
    "drasill_cli.tools": "core",
    "drasill_cli.transfer": "core",
    "drasill_cli.wake": "core",
    "drasill_cli.watcher": "core",
    "drasill_cli.web": "core",
    "drasill_cli.web.": "core",
    # cli: Typer, parsing and rendering; `python -m drasill_cli`.
    "drasill_cli.cli": "cli",
    "drasill_cli.cli.": "cli",
    "drasill_cli.__main__": "cli",
}

# The only modules that may import the backend registry or a backend (the package included).
BACKEND_IMPORTERS = ("drasill_cli.mesh", "drasill_cli.backends")


def layer_of(module: str) -> str | None:
    """The layer of `module`: its own entry, else the nearest package entry holding it."""
    if module in LAYER_OF:
        return LAYER_OF[module]
    parts = module.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found = LAYER_OF.get(".".join(parts[:end]) + ".")
        if found is not None:
            return found
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a higher layer, and each module without a layer."""
    rank = {name: n for n, name in enumerate(LAYERS)}
    found: list[str] = []
    for module in sorted(graph):
        mine = layer_of(module)
        if mine is None:
            found.append(f"{module} has no layer: give it one in LAYER_OF")
            continue
        for imported in sorted(graph[module]):
            theirs = layer_of(imported)
            if theirs is not None and rank[theirs] > rank[mine]:
                found.append(f"{module} ({mine}) imports {imported} ({theirs})")
    return found


def backend_importers(graph: dict[str, set[str]]) -> list[str]:
    """Each module outside `BACKEND_IMPORTERS` that imports `drasill_cli.backends[.*]`."""

    def allowed(module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in BACKEND_IMPORTERS)

    return [
        f"{module} imports {imported}"
        for module in sorted(graph)
        if not allowed(module)
        for imported in sorted(graph[module])
        if imported == "drasill_cli.backends" or imported.startswith("drasill_cli.backends.")
    ]


def test_every_module_imports_only_its_own_layer_or_lower_ones() -> None:
    graph = import_graph(type_checking=True)
    assert "drasill_cli.location" in graph and "drasill_cli.cli.app" in graph
    assert layer_violations(graph) == []


def test_only_the_mesh_and_the_backends_import_the_backends() -> None:
    assert backend_importers(import_graph(type_checking=True)) == []


def test_the_layer_checks_are_not_blind() -> None:
    """Planted edges are reported: an upward import (a function's lazy one counts), a module
    without a layer, a feature reaching a backend past the mesh."""
    tree = ast.parse(
        "def later():\n    from drasill_cli.cli import app\n"
        "from drasill_cli.backends.directory import store\n"
    )
    modules = {"drasill_cli.cli.app", "drasill_cli.backends.directory.store"}
    edges = _imported(tree, "drasill_cli.tasks", False, modules)
    assert edges == modules
    graph = {"drasill_cli.tasks": edges, "drasill_cli.brand_new": set()}
    assert layer_violations(graph) == [
        "drasill_cli.brand_new has no layer: give it one in LAYER_OF",
        "drasill_cli.tasks (core) imports drasill_cli.cli.app (cli)",
    ]
    assert backend_importers(graph) == [
        "drasill_cli.tasks imports drasill_cli.backends.directory.store"
    ]
    assert layer_of("drasill_cli.backends.postgres.urls") == "storage"
    assert layer_of("drasill_cli.storage") == "storage"
