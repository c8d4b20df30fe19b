"""The package's import structure: no module imports itself back through others, and no layer imports a
layer above it. Lazy imports inside functions count: they are deferred, not absent."""

import ast
import graphlib
from pathlib import Path

import pytest

from .conftest import ROOT

SRC = ROOT / "src"
# Lowest first: a package or top-level module may import only from its own layer's peers or below.
LAYERS = [
    {"common"},
    {"chat", "optim"},
    {"packing", "loading", "data"},
    {"loss"},
    {"recipes"},
    {"training", "evaluation"},
    {"report", "benchmark"},
    {"stages"},
    {"cli", "__main__"},
]
LAYER = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, src: Path, modules: set[str]) -> set[str]:
    """The package's modules this file imports, anywhere in it."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found & modules if m not in (name, "ftbench")}  # ftbench/__init__ is a docstring


def graph(src: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in (src / "ftbench").rglob("*.py")}
    return {name: imports(path, src, set(files)) for name, path in files.items()}


def part(module: str) -> str:
    return module.split(".")[1]


def test_no_module_imports_itself_back():
    graphlib.TopologicalSorter(graph()).prepare()  # raises CycleError, naming the circle


def test_every_part_is_in_a_layer_and_imports_none_above_it():
    edges = graph()
    assert {part(m) for m in edges if m != "ftbench"} <= set(LAYER)
    upward = [f"{m} imports {t}" for m, ts in edges.items() for t in ts if LAYER[part(t)] > LAYER[part(m)]]
    assert not upward


def test_the_walk_sees_a_lazy_import_and_a_cycle(tmp_path):

    package = tmp_path / "ftbench"
    (package / "common").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "common" / "__init__.py").write_text("")
    (package / "common" / "a.py").write_text("def f():\n    from ftbench.common import b\n")
    (package / "common" / "b.py").write_text("from . import a\n")
    edges = graph(tmp_path)
    assert "ftbench.common.b" in edges["ftbench.common.a"]  # inside a function
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(edges).prepare()
