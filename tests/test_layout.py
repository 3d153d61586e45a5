"""The layout keeps its promises: the toolkit never imports the demo, and its
imports have no cycles, module by module or package by package."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLKIT = REPO / "strangler_proxy"
DEMO_PACKAGES = ("legacy_monolith", "extracted_services")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module a file imports, at any depth (functions too), and every
    string handed to importlib.import_module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            yield str(node.args[0].value)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in TOOLKIT.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package(module: str) -> str:
    """``strangler_proxy.diff.differ`` -> ``strangler_proxy.diff``; top-level modules stay themselves."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_toolkit_never_imports_the_demo() -> None:
    offenders = sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for path in TOOLKIT.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in DEMO_PACKAGES
    )
    assert offenders == []


def test_no_toolkit_text_shows_an_import_of_the_demo() -> None:
    """Docstring examples too: a reader copying one must not learn to import the demo."""
    offenders = sorted(
        f"{path.relative_to(REPO)}:{n}"
        for path in TOOLKIT.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(f"{word} {demo}" in line for word in ("import", "from") for demo in DEMO_PACKAGES)
    )
    assert offenders == []


def test_the_module_import_graph_has_no_cycle() -> None:
    assert _cycle(_graph()) is None


def test_the_package_import_graph_has_no_cycle() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module)
        )
    assert _cycle(packages) is None


def test_the_checks_can_see_a_demo_import_and_a_cycle(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from legacy_monolith.seed import SeedPlan\n"
                     "import importlib\nimportlib.import_module('extracted_services.ratings.spec')\n")
    assert {"legacy_monolith.seed", "extracted_services.ratings.spec"} <= set(_imports(probe))
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
