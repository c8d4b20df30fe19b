"""Training checkpoints, so an interrupted stage resumes where it stopped.

They live in checkpoints/, outside every DVC output, because DVC deletes a stage's outputs before it
reruns it. A checkpoint holds the trainable weights, the optimizer state, the scheduler, the RNG and
the loss curve so far; the data position is the step count (batches are a pure function of the seed).
galore-torch keeps each projector as a Python object in the optimizer state, which
`torch.load(weights_only=True)` refuses, so projectors are stored as their tensors and settings and
rebuilt on load: a checkpoint never needs unpickling of arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ftbench.atomic import atomic_path
from ftbench.errors import UserError
from ftbench.galore import Projector
from ftbench.progress import LOG

ROOT = Path("checkpoints")
FILE = "state.pt"
PROJECTOR_KEYS = ("rank", "update_proj_gap", "scale", "proj_type", "svd")


def folder(method: str, run_key: str) -> Path:
    return ROOT / method / run_key.replace("/", "-")


def fingerprint(settings: dict) -> str:
    """Identifies the run a checkpoint belongs to: resuming under other params would mix two runs."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """state_dict() with each GaLore projector as plain data (state_dict shares the live per-param dicts,
    so they are copied before the projector is swapped out)."""
    state = optimizer.state_dict()
    state["state"] = {i: _plain(s) for i, s in state["state"].items()}
    return state


def _plain(s: dict) -> dict:
    s = dict(s)
    proj = s.pop("projector", None)
    if proj is not None:
        s["projector"] = {"ortho_matrix": proj.ortho_matrix, **{k: getattr(proj, k) for k in PROJECTOR_KEYS}}
    return s


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load the state, then rebuild projectors. They bypass load_state_dict, whose casting of state
    values would mangle their strings; state keys are positions in the param groups' order."""
    projectors = {i: s.pop("projector") for i, s in state["state"].items() if "projector" in s}
    optimizer.load_state_dict(state)
    params = [t for group in optimizer.param_groups for t in group["params"]]
    for i, saved in projectors.items():
        proj = Projector(**{k: saved[k] for k in PROJECTOR_KEYS})
        matrix = saved["ortho_matrix"]
        device = params[i].device
        proj.ortho_matrix = [m.to(device) for m in matrix] if isinstance(matrix, list) else matrix.to(device)
        optimizer.state[params[i]]["projector"] = proj


def save(where: Path, fp: str, step: int, model, optimizer, scheduler, progress: dict) -> None:
    trainable = {n: t.detach() for n, t in model.named_parameters() if t.requires_grad}
    state = {
        "fingerprint": fp,
        "step": step,
        "progress": progress,
        "model": trainable,
        "optimizer": _optimizer_state(optimizer),
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


def load(where: Path, fp: str, model, optimizer, scheduler) -> tuple[int, dict] | None:
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
    _load_optimizer(optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    LOG.info(f"  resuming from step {state['step']} ({path})")
    return state["step"], state["progress"]


def remove(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
