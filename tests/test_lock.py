"""The lock files (requirements/cpu.txt, requirements/gpu.txt): what is installed is exactly what they
say, and they hold every dependency pyproject.toml declares, within its range."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"cpu": ROOT / "requirements/cpu.txt", "gpu": ROOT / "requirements/gpu.txt"}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)", re.M)
NOT_LOCKED = {"pip", "ftbench"}  # the venv's own installer, and the project installed from its checkout


def locked(lock: Path) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall(lock.read_text())}


def entries(lock: Path) -> list[str]:
    """Each package's block: its pin line with its hashes (uv's layout, one `name==version \\` block each)."""
    return re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 2)[2])


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_installed_packages_are_exactly_the_lock():
    """This venv holds the lock's packages at the lock's versions, and nothing else: the same install
    wherever `make install` ran (a fresh install from the ranges would take other versions)."""
    lock = LOCKS["gpu" if torch.version.cuda else "cpu"]
    want, have = locked(lock), installed()
    differ = {n: (v, have.get(n)) for n, v in want.items() if have.get(n) != v}
    assert not differ, f"installed versions differ from {lock.name} (name: (locked, installed)): {differ}"
    extra = set(have) - set(want) - NOT_LOCKED
    assert not extra, f"installed but not in {lock.name}: {sorted(extra)}; run `make install`"


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_lock_holds_every_declared_dependency_within_its_range(flavour: str):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = ["dev"] + (["gpu"] if flavour == "gpu" else [])
    declared = project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]
    pins = locked(LOCKS[flavour])
    for spec in map(Requirement, declared):
        version = pins.get(canonicalize_name(spec.name))
        assert version is not None, f"{spec.name} is declared but not in {flavour}.txt: run `make lock`"
        assert spec.specifier.contains(Version(version), prereleases=True), (flavour, spec, version)


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_every_locked_package_has_a_hash(flavour: str):
    blocks = entries(LOCKS[flavour])
    assert len(blocks) == len(locked(LOCKS[flavour]))
    unhashed = [b.split()[0] for b in blocks if "--hash=sha256:" not in b]
    assert not unhashed, unhashed


def test_the_locks_differ_only_in_torch_and_the_gpu_packages():
    """The same study on both: one torch release (the CPU build on CPUs, PyPI's CUDA build with its
    runtime on GPUs), and every other package at one version."""
    cpu, gpu = locked(LOCKS["cpu"]), locked(LOCKS["gpu"])
    assert cpu["torch"] == gpu["torch"] + "+cpu"
    shared = cpu.keys() & gpu.keys() - {"torch"}
    assert {n: cpu[n] for n in shared} == {n: gpu[n] for n in shared}
    assert cpu.keys() - {"torch"} <= gpu.keys()


def test_no_lock_brings_the_kernels_package():
    """`kernels` fetches compiled kernels from the hub at run time and prints an offline warning on
    stderr at import (transformers 5.25 depends on it): not in a study whose stages run offline."""
    for lock in LOCKS.values():
        assert "kernels" not in locked(lock), lock.name
