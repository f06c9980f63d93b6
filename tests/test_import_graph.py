"""The package's import graph (ARCHITECTURE.md): no import cycle among trackformers modules,
and no import of a project module inside a function, where it hides a cycle and an import
cost, except for the explicit allow-list ``HEAVY`` below.

The graph is read from the source with ``ast`` (nothing is imported): an edge a -> b for every
``import`` / ``from ... import`` in module a that names module b (``from pkg import sub``
names the submodule ``pkg.sub``; ``from pkg import name`` the package ``pkg``), wherever the
statement is, so a cycle hidden by a function-local import is a cycle too.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package name -> source folder (pyproject's package-dir: trackformers.kernels is kernels/)
ROOTS = {"trackformers": REPO / "trackformers", "trackformers.kernels": REPO / "kernels"}

# function-local project imports that stay: an optional or heavy dependency only one path needs
HEAVY = {
    ("trackformers.metrics.event", "trackformers.sim.weights"): "the sim package's import "
    "loads numba and the detector (~0.6 s); only evaluate_event(weights='official') needs it",
    ("trackformers.kernels.fa4", "trackformers.kernels.fa4_mask"): "the mask_mod imports "
    "cutlass (nvidia-cutlass-dsl, optional, ~190 MB compiler); only the FA4 JIT path needs it",
    ("trackformers.data.datamodule", "trackformers.data.streaming"): "a streamed dataset loads "
    "the sim package (numba, detector, ~0.6 s); datasets read from files do not need it",
}


def find_modules(roots: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file of every .py file under the roots (symlinked folders skipped: the
    development checkout links trackformers/kernels to kernels/)."""
    mods = {}
    for pkg, root in roots.items():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not (Path(folder) / d).is_symlink())
            for f in files:
                if not f.endswith(".py"):
                    continue
                parts = (Path(folder) / f).relative_to(root).with_suffix("").parts
                parts = parts[:-1] if parts[-1] == "__init__" else parts
                mods[".".join((pkg, *parts))] = Path(folder) / f
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The module an imported name belongs to (``a.b.func`` -> ``a.b``), None outside."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _top_level(tree: ast.Module) -> set[int]:
    """ids of the import statements run at import time (also under a module-level if / try)."""
    out = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.add(id(node))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    return out


def module_imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, function-local) of every import statement of a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = _top_level(tree)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = name.split(".")[: len(name.split(".")) - (0 if is_pkg else 1)]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for target in {_resolve(n, mods) for n in names} - {None, name}:
            out.append((target, node.lineno, id(node) not in top))
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    return {m: {t for t, _, _ in module_imports(m, p, mods)} for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a] of the graph, or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def local_imports(mods: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(module, imported project module, line) of every function-local project import."""
    return [
        (m, t, line)
        for m, p in sorted(mods.items())
        for t, line, local in module_imports(m, p, mods)
        if local
    ]


@pytest.fixture(scope="module")
def mods():
    found = find_modules(ROOTS)
    assert "trackformers.inference.predictor" in found and "trackformers.kernels.ops" in found
    return found


def test_no_import_cycle(mods):
    cycle = find_cycle(import_graph(mods))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_local_project_imports(mods):
    bad = [f"{m}:{line} imports {t}" for m, t, line in local_imports(mods) if (m, t) not in HEAVY]
    assert not bad, (
        "project modules imported inside functions (import them at the top; a heavy optional "
        "dependency goes into HEAVY with its reason):\n" + "\n".join(bad)
    )


def test_allow_list_names_imports_that_still_exist(mods):
    pairs = {(m, t) for m, t, _ in local_imports(mods)}
    stale = [f"HEAVY {k}" for k in HEAVY if k not in pairs]
    assert not stale, "HEAVY entries without a local import any more, remove them: " + (
        ", ".join(stale)
    )


def test_the_checks_find_a_cycle_and_a_local_import(tmp_path):
    """The checker on a planted package: a <-> b through a function-local import, c clean."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from pkg import a\n\n    return a\n")
    (pkg / "c.py").write_text("from . import b\nimport pkg.a as x\n")
    planted = find_modules({"pkg": pkg})
    assert set(planted) == {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    graph = import_graph(planted)
    assert graph["pkg.c"] == {"pkg.a", "pkg.b"}  # relative and aliased imports resolved
    assert find_cycle(graph) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])
    assert local_imports(planted) == [("pkg.b", "pkg.a", 2)]
    del graph["pkg.b"]
    assert find_cycle(graph) is None
