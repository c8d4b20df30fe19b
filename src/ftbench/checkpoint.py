"""Training checkpoints, so an interrupted stage resumes where it stopped.

They live in checkpoints/, outside every DVC output, because DVC deletes a stage's outputs before it
reruns it. A checkpoint holds the trainable weights, the optimizer state, the scheduler, the RNG and
the loss curve so far; the data position is the step count (batches are a pure function of the seed).
The recipe turns its optimizer's state into tensors and plain data (Recipe.optimizer_state), so a
checkpoint loads with `torch.load(weights_only=True)`, never unpickling arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ftbench.atomic import atomic_path
from ftbench.errors import UserError
from ftbench.progress import LOG
from ftbench.recipes import Recipe

ROOT = Path("checkpoints")
FILE = "state.pt"


def folder(method: str, run_key: str) -> Path:
    return ROOT / method / run_key.replace("/", "-")


def fingerprint(settings: dict) -> str:
    """Identifies the run a checkpoint belongs to: resuming under other params would mix two runs."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(
    where: Path, fp: str, step: int, recipe: Recipe, model, optimizer, scheduler, progress: dict
) -> None:
    trainable = {n: t.detach() for n, t in model.named_parameters() if t.requires_grad}
    state = {
        "fingerprint": fp,
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


def load(where: Path, fp: str, recipe: Recipe, model, optimizer, scheduler) -> tuple[int, dict] | None:
    """Restore a matching checkpoint; returns (steps done, progress) or None to start afresh."""
    path = where / FILE
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fp:
        LOG.info(f"  ignoring {path}: it was written under other params")
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


def remove(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
