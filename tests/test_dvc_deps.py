"""dvc.yaml's deps are exactly the code each stage runs: `dvc repro` reruns a stage when, and only when,
a src/ftbench module it imports (directly or not, lazily or not) changes. The two imports by name are
followed: the command line's, to the command's module, and `recipes.get`, to the recipe of the method
the stage runs."""

from __future__ import annotations

import ast
import importlib
import re
import time
from collections.abc import Collection
from pathlib import Path

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from pydantic import BaseModel

from ftbench.common import commands, config

from .conftest import ROOT

SRC = ROOT / "src"
PACKAGE_DIR = SRC / "ftbench"
STAGE_COMMAND = re.compile(r"python -m ftbench (\w+)")
REGISTRY = "recipes"  # <package>.recipes.get(name) imports <package>.recipes.<name>
COMMAND_LINE = "cli"  # <package>.cli imports <package>.stages.<command> for `python -m <package> <command>`


def module_file(name: str, src: Path) -> Path | None:
    """`pkg.x` -> src/pkg/x.py (or the package's __init__.py); None for what is not a module there."""
    base = src / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path, module: str, by_name: set[str] | None = None) -> set[str]:
    """Every module name an import statement anywhere in the file may load (function bodies included),
    as absolute names: `from pkg import a` names both `pkg` and `pkg.a`. An import by name is refused,
    but where `by_name` says which modules it loads (the recipe registry)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:  # relative: `from . import a`, `from .a import b`
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            if by_name is None:
                raise AssertionError(f"{path}:{node.lineno}: a dynamic import the walk cannot follow")
            names.update(by_name)
    return names


def _is_dynamic_import(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Name) and f.id == "__import__") or (
        isinstance(f, ast.Attribute) and f.attr == "import_module"
    )


def reachable(
    module: str, src: Path = SRC, recipes: Collection[str] = (), command: str | None = None
) -> set[Path]:
    """The files of `module`'s package that `python -m <module>` executes, given the `recipes` it asks
    the registry for and the `command` the command line runs: the module, what it imports
    transitively, and the __init__ of every package on the way."""
    package = module.split(".")[0]
    by_name = {
        f"{package}.{REGISTRY}": {f"{package}.{REGISTRY}.{r}" for r in recipes},
        f"{package}.{COMMAND_LINE}": {f"{package}.stages.{command}"} if command else None,
    }
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__
        path = module_file(name, src)
        if path is not None:
            loads = imported_names(path, name, by_name.get(name))
            todo += [n for n in loads if n.split(".")[0] == package]
    return {f for f in (module_file(n, src) for n in seen) if f is not None}


def stages() -> list:
    """dvc.yaml's stages as DVC itself resolves them (foreach expanded, ${...} substituted)."""
    repo = Repo(str(ROOT))
    try:
        return list(repo.index.stages)
    finally:
        repo.close()


def code_deps(stage) -> set[Path]:
    """The src/ftbench files a stage's deps cover (a folder dep covers every file under it)."""
    files = set(PACKAGE_DIR.rglob("*.py"))
    return {f for d in stage.deps for f in files if f.is_relative_to(Path(d.fs_path))}


def recipes_run(stage) -> set[str]:
    """The recipes a stage asks recipes.get for: that of the method it is given (train, merge, evaluate),
    none for the base model or a stage without one. An ensemble's stage counts as running every recipe:
    DVC cannot look its members' recipes up, so it depends on the whole recipes/ folder."""
    p = config.load(ROOT / "params.yaml")
    args = stage.cmd.split()[4:]
    if any(arg in p.ensembles for arg in args):
        return {f.stem for f in (PACKAGE_DIR / REGISTRY).glob("*.py") if f.stem != "__init__"}
    return {p.methods[arg].recipe for arg in args if arg in p.methods}


STAGES = stages()


def walked(
    tmp_path: Path, files: dict[str, str], recipes: Collection[str] = (), command: str | None = None
) -> set[str]:
    """The files of a package `pkg` of `files` (path -> text) that `python -m pkg.stage` runs."""
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    return {str(p.relative_to(tmp_path / "pkg")) for p in reachable("pkg.stage", tmp_path, recipes, command)}


def test_the_walk_follows_every_kind_of_import(tmp_path):
    files = {
        "__init__.py": "",
        "stage.py": "import os\nfrom . import relative\nfrom pkg.attribute import thing\n",
        "relative.py": "def f():\n    from .lazy import g\n",
        "attribute.py": "thing = 1\n",
        "lazy.py": "import pkg.sub.deep as d\n",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import leaf\n",
        "leaf.py": "",
        "unused.py": "",
    }
    assert walked(tmp_path, files) == set(files) - {"unused.py"}


def test_the_walk_refuses_imports_it_cannot_follow(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "stage.py").write_text("import importlib\nimportlib.import_module('pkg.x')\n")
    with pytest.raises(AssertionError, match="dynamic import"):
        reachable("pkg.stage", tmp_path)


def test_the_walk_follows_the_command_line_to_the_command_run(tmp_path):
    files = {
        "__init__.py": "",
        "stage.py": "from pkg import cli\n",
        "cli.py": "import importlib\ndef main(c):\n    importlib.import_module(f'pkg.stages.{c}')\n",
        "stages/__init__.py": "",
        "stages/train.py": "from pkg import leaf\n",
        "stages/report.py": "",
        "leaf.py": "",
    }
    assert walked(tmp_path, files, command="train") == set(files) - {"stages/report.py"}


def test_the_walk_follows_the_registry_to_the_recipes_asked_for(tmp_path):
    files = {
        "__init__.py": "",
        "stage.py": "from pkg import recipes\n",
        "recipes/__init__.py": "import importlib\ndef get(n):\n    return importlib.import_module(n)\n",
        "recipes/a.py": "from pkg import leaf\n",
        "recipes/b.py": "",
        "leaf.py": "",
    }
    assert walked(tmp_path, files, recipes=["a"]) == set(files) - {"recipes/b.py"}
    assert walked(tmp_path, files) == set(files) - {"recipes/a.py", "recipes/b.py", "leaf.py"}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_deps_are_exactly_the_code_it_runs(stage):
    command = STAGE_COMMAND.search(stage.cmd)
    assert command, f"{stage.name}: its cmd does not run `python -m ftbench <command>`"
    runs = reachable("ftbench.__main__", recipes=recipes_run(stage), command=command.group(1))
    listed = code_deps(stage)
    missing = sorted(str(p.relative_to(ROOT)) for p in runs - listed)
    extra = sorted(str(p.relative_to(ROOT)) for p in listed - runs)
    assert not missing, f"{stage.name} runs code dvc.yaml does not list as a dep: {missing}"
    assert not extra, f"{stage.name} lists deps it never imports (a change there reruns it): {extra}"


# ---------------------------------------------------------------- params


class Reads(set):
    """The params.yaml keys a stage read, as dotted paths; `<path>.*` when it listed a mapping's names.

    Config validation in config.load() is not a read (it stops a stage, never changes its outputs),
    so recording starts on the object load() returns."""


def watch(value, path: str, reads: Reads):
    if isinstance(value, BaseModel):
        return WatchedModel(value, path, reads)
    if isinstance(value, dict):
        return WatchedDict(value, path, reads)
    reads.add(path)
    return value


class WatchedModel:
    """A params object (pydantic) that records every key read through it, methods such as runs() included."""

    def __init__(self, real: BaseModel, path: str, reads: Reads) -> None:
        self._real, self._path, self._reads = real, path, reads

    def __getattr__(self, name: str):
        real, path = self._real, self._path
        if name in type(real).model_fields:
            return watch(getattr(real, name), f"{path}.{name}".lstrip("."), self._reads)
        if name.startswith("model_"):  # model_dump() and the like read the whole section
            self._reads.add(path)
            return getattr(real, name)
        method = getattr(type(real), name)
        return method.__get__(self) if callable(method) else getattr(real, name)


class WatchedDict:
    """A mapping in params (methods, merge, data.datasets): entries read are recorded one by one."""

    def __init__(self, real: dict, path: str, reads: Reads) -> None:
        self._real, self._path, self._reads = real, path, reads

    def _names(self) -> list:
        self._reads.add(f"{self._path}.*")
        return list(self._real)

    def __getitem__(self, key):
        return watch(self._real[key], f"{self._path}.{key}", self._reads)

    def get(self, key, default=None):
        return self[key] if key in self._real else default

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, key) -> bool:
        return key in self._names()

    def keys(self) -> list:
        return self._names()

    def items(self) -> list:
        return [(k, self[k]) for k in self._names()]

    def values(self) -> list:
        return [self[k] for k in self._names()]


def foreach_mappings() -> set[str]:
    """The params mappings dvc.yaml's foreach turns into one stage per name (methods, merge)."""
    stages_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {s["foreach"].strip("${}") for s in stages_yaml.values() if "foreach" in s}


def declared_params(stage) -> set[str]:
    return {key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_params_are_the_keys_its_command_declares(stage):
    """ftbench.common.commands declares what each command reads (its --help lists it, with no dvc.yaml at
    hand); the slow test below checks dvc.yaml's params against the reads themselves."""
    _, _, _, command, *args = stage.cmd.split()
    p = config.load(ROOT / "params.yaml")  # an ensemble's reads name its members
    assert declared_params(stage) == commands.params_read(command, *args, p=p)


def is_covered(read: str, declared: set[str], foreach: set[str]) -> bool:
    if read.endswith(".*") and read[:-2] in foreach:
        return True  # a stage checking its own name against methods/merge: DVC's foreach made the name
    path = read.removesuffix(".*")
    return any(path == d or path.startswith(f"{d}.") for d in declared)


def is_read(declared: str, reads: Reads) -> bool:
    paths_read = {r.removesuffix(".*") for r in reads}
    return any(
        p == declared or p.startswith(f"{declared}.") or declared.startswith(f"{p}.") for p in paths_read
    )


def run_in_process(stage, reads: Reads) -> None:
    """The stage's `python -m ftbench <command> <args>`, in this process, with its params watched."""
    _, _, _, command, *args = stage.cmd.split()
    load = config.load
    with pytest.MonkeyPatch.context() as m:
        m.setattr(config, "load", lambda *a: watch(load(*a), "", reads))
        importlib.import_module(f"ftbench.stages.{command}").main(args)


def written_since(root: Path, since_ns: int) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime_ns >= since_ns}


def outside_outs(stage, root: Path, files: set[Path]) -> list[str]:
    outs = [root / str(out.def_path) for out in stage.outs]
    return sorted(str(f.relative_to(root)) for f in files if not any(f == o or o in f.parents for o in outs))


@pytest.mark.slow
def test_stage_params_are_exactly_the_keys_it_reads(project, tiny_model_dir, monkeypatch):
    """Runs every stage of dvc.yaml in order on the tiny model, recording the params it reads and the
    files it writes: every method's stages, which tests/test_pipeline.py runs under DVC for three."""
    import networkx as nx

    monkeypatch.setenv("FTBENCH_MLFLOW", "off")  # tracking logs every param to MLflow: a record, not a read
    repo = Repo(str(ROOT))
    order = list(reversed(list(nx.topological_sort(repo.index.graph))))
    repo.close()
    foreach, problems = foreach_mappings(), []
    for stage in order:
        reads, started = Reads(), time.time_ns()
        run_in_process(stage, reads)
        problems += [
            f"{stage.name} writes {f}, not in its outs"
            for f in outside_outs(stage, project, written_since(project, started))
        ]
        problems += [
            f"{stage.name} did not write its out {o}"
            for o in stage.outs
            if not (project / str(o.def_path)).exists()
        ]
        declared = declared_params(stage)
        problems += [
            f"{stage.name} reads {r}, not in its params"
            for r in sorted(reads)
            if not is_covered(r, declared, foreach)
        ]
        problems += [
            f"{stage.name} lists {d} but never reads it" for d in sorted(declared) if not is_read(d, reads)
        ]
    assert not problems, "\n".join(problems)
