"""The project's import graph, read with ast (nothing is imported): no cycle, no edge the layers
do not allow (DESIGN.md §2), and no function-local import of a project module unless that
module pulls in a heavy library (ray, vllm, torch, ...) at import time."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dataset_builder", "eval", "train", "ray_jobs")
HEAVY = ("ray", "vllm", "torch", "transformers", "trl", "datasets", "peft", "matplotlib")

# layer -> the layers it may import (besides itself); the longest matching prefix is the layer.
ALLOWED = {
    "dataset_builder.core": set(),
    "dataset_builder.llm": {"dataset_builder.core"},
    "dataset_builder": {"dataset_builder.core", "dataset_builder.llm"},   # AgentWrite, curation
    "eval": {"dataset_builder.core", "dataset_builder.llm"},
    "train": {"dataset_builder.core", "dataset_builder.llm", "eval"},
    "ray_jobs": {"dataset_builder.core", "dataset_builder.llm", "dataset_builder", "eval",
                 "train"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(node: ast.ImportFrom | ast.Import, mod: str, is_pkg: bool) -> list[str]:
    """The project modules an import statement names (`from a import b` is a.b if b is one)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = mod.split(".") if is_pkg else mod.split(".")[:-1]
            parent = parent[:len(parent) - node.level + 1]
            base = ".".join(parent + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                 for a in node.names]
    out = []
    for n in names:
        while n and n not in MODULES:   # `import a.b.c` of a non-module attribute: its module
            n = n.rpartition(".")[0]
        if n:
            out.append(n)
    return out


def _imports() -> dict[str, dict[str, list[tuple[str, bool]]]]:
    """{module: {"project": [(target, local)], "external": [(top-level name, local)]}}."""
    graph = {}
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local_nodes = {id(n) for f in ast.walk(tree)
                       if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        proj, ext = [], []
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            local = id(node) in local_nodes
            targets = _resolve(node, mod, path.name == "__init__.py")
            proj += [(t, local) for t in targets if t != mod]
            if not targets and not getattr(node, "level", 0):
                first = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                ext.append((first.split(".")[0], local))
        graph[mod] = {"project": proj, "external": ext}
    return graph


GRAPH = _imports()


def _layer(mod: str) -> str:
    return max((k for k in ALLOWED if mod == k or mod.startswith(k + ".")), key=len)


def test_the_graph_is_read():
    assert "dataset_builder.core.config" in MODULES and "ray_jobs.generate" in MODULES
    assert ("dataset_builder.core.config", False) in GRAPH["dataset_builder.core.storage"][
        "project"]


def test_no_import_cycle():
    edges = {m: {t for t, _ in g["project"]} for m, g in GRAPH.items()}
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t] if t in path else [m, t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_every_edge_is_allowed():
    bad = [f"{m} -> {t}" for m, g in GRAPH.items() for t, _ in g["project"]
           if _layer(t) != _layer(m) and _layer(t) not in ALLOWED[_layer(m)]]
    assert not bad, "imports the layers do not allow (DESIGN.md §2):\n" + "\n".join(bad)


def _heavy(mod: str, seen: set | None = None) -> bool:
    """Does importing `mod` import a heavy library (directly or through project modules)?"""
    seen = seen if seen is not None else set()
    if mod in seen:
        return False
    seen.add(mod)
    g = GRAPH[mod]
    return any(e in HEAVY for e, local in g["external"] if not local) or \
        any(_heavy(t, seen) for t, local in g["project"] if not local)


def test_function_local_imports_only_for_heavy_modules():
    """A function-local import hides a dependency (and once hid two cycles); it is kept only
    where it spares `--help-config` and the pure library a heavy import."""
    bad = [f"{m}: import {t} inside a function (it imports nothing heavy: move it to the top)"
           for m, g in GRAPH.items() for t, local in g["project"]
           if local and not _heavy(t)]
    assert not bad, "\n".join(sorted(set(bad)))


def test_core_and_the_pure_library_import_nothing_heavy_at_import_time():
    for mod in ("dataset_builder.core.config", "dataset_builder.core.storage",
                "dataset_builder.core.instructions", "dataset_builder.curate.filters",
                "dataset_builder.selection", "eval.scoring", "train.config"):
        assert not _heavy(mod), mod


def test_tests_share_helpers_only_through_tests_helpers():
    """A test file never imports another test file or conftest: what they share is in
    tests/helpers.py (fixtures stay in conftest.py, found by pytest)."""
    bad = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("tests.") and node.module != "tests.helpers"
                    or "conftest" in node.module):
                bad.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
    assert not bad, "\n".join(bad)
