"""Training checkpoints, so an interrupted stage resumes where it stopped.

They live in checkpoints/, outside every DVC output, because DVC deletes a stage's outputs before it
reruns it. A checkpoint holds the trainable weights, the optimizer state, the scheduler, the RNG and
the loss curve so far; the data position is the step count (batches are a pure function of the seed).
The recipe turns its optimizer's state into tensors and plain data (Recipe.optimizer_state), so a
checkpoint loads with `torch.load(weights_only=True)`, never unpickling arbitrary objects.

A checkpoint resumes only the run that wrote it: it stores the run's Fingerprint, a digest of each thing
that determines the run, and one that differs is named and the checkpoint ignored.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ftbench.common.atomic import atomic_path
from ftbench.common.errors import UserError
from ftbench.common.progress import LOG
from ftbench.recipes import Recipe

ROOT = Path("checkpoints")
FILE = "state.pt"
PACKAGE = Path(__file__).parents[1]  # the ftbench package: its source is a part of every fingerprint


def folder(method: str, run_key: str) -> Path:
    return ROOT / method / run_key.replace("/", "-")


@dataclass(frozen=True)
class Fingerprint:
    """What determines a run, as parts named in words a user reads; `parts` gives each one's digest.

    The files are hashed when a checkpoint is first checked or saved, then kept: a 1B model's 2 GB of
    weights take seconds, which a stage that never checkpoints should not spend."""

    settings: dict[str, object]
    """Part -> params or other plain values (compared as JSON)."""
    files: dict[str, Path]
    """Part -> a file or a folder, compared by content."""

    @cached_property
    def parts(self) -> dict[str, str]:
        plain = {
            what: _digest_text(json.dumps(v, sort_keys=True, default=str))
            for what, v in self.settings.items()
        }
        files = {what: _digest_files(path) for what, path in self.files.items()}
        # the code too: a changed step, loss or recipe would go on with another computation than it began
        return {**plain, **files, "the ftbench code": _digest_files(PACKAGE, "*.py")}

    def changes(self, saved: dict[str, str]) -> list[str]:
        """The parts whose digests differ from `saved`'s; a part only one of them has is one."""
        return [what for what in {**self.parts, **saved} if self.parts.get(what) != saved.get(what)]


def _digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digest_files(path: Path, pattern: str = "*") -> str:
    """A file's content, or a folder's files matching `pattern` by name (relative to the folder, so a
    moved checkout keeps its digests) and content."""
    files = sorted(f for f in path.rglob(pattern) if f.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path)}\0".encode())
        with f.open("rb") as content:
            digest.update(hashlib.file_digest(content, "sha256").digest())
    return digest.hexdigest()[:16]


def save(
    where: Path, fp: Fingerprint, step: int, recipe: Recipe, model, optimizer, scheduler, progress: dict
) -> None:
    trainable = {n: t.detach() for n, t in model.named_parameters() if t.requires_grad}
    state = {
        "fingerprint": fp.parts,
        "step": step,
        "progress": progress,
        "model": trainable,
        "optimizer": recipe.optimizer_state(optimizer),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    with atomic_path(where / FILE) as tmp:
        torch.save(state, tmp)


def _check_weights(path: Path, model, saved: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose weights are not exactly the model's trainable ones: loading it anyway
    would leave the unmatched parameters at their initial values and resume a different model."""
    trainable = {n: t for n, t in model.named_parameters() if t.requires_grad}
    mismatches = {
        "not saved": trainable.keys() - saved.keys(),
        "not in the model": saved.keys() - trainable.keys(),
        "other shape": {n for n in trainable.keys() & saved.keys() if trainable[n].shape != saved[n].shape},
    }
    found = [f"{what}: {_few(names)}" for what, names in mismatches.items() if names]
    if found:
        raise UserError(
            f"checkpoint {path} does not match the model's trainable weights ({'; '.join(found)}); "
            f"delete {path.parent} to train afresh"
        )


def _few(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load(
    where: Path, fp: Fingerprint, recipe: Recipe, model, optimizer, scheduler
) -> tuple[int, dict] | None:
    """Restore a matching checkpoint; returns (steps done, progress) or None to start afresh."""
    path = where / FILE
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    other_run = _other_run(fp, state["fingerprint"])
    if other_run:
        LOG.warning(f"ignoring {path}: {other_run}; training from the start")
        return None
    _check_weights(path, model, state["model"])
    model.load_state_dict(state["model"], strict=False)  # strict=False: it holds the trainable ones only
    recipe.load_optimizer_state(optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    LOG.info(f"  resuming from step {state['step']} ({path})")
    return state["step"], state["progress"]


def _other_run(fp: Fingerprint, saved: dict[str, str] | str) -> str | None:
    """How the run that wrote a checkpoint differs from this one, in words; None for this run's own."""
    if isinstance(saved, str):  # older code saved one digest of everything, which names no part
        return "it was written by an older ftbench, which recorded nothing to compare with this run"
    changed = fp.changes(saved)
    if not changed:
        return None
    listed = ", ".join(changed[:-1]) + " and " + changed[-1] if len(changed) > 1 else changed[0]
    return f"{listed} changed since it was written"


def remove(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
