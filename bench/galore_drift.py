"""How far `galore.accumulation: projected` drifts from GaLore as published (`full`) over a real run.

Trains the galore method twice from the same weights on the same steps, one optimizer step of each
in turn, and prints both losses per step with the running max and mean relative difference, so a run
cut short still reports every step it finished. Run it in a project folder that holds models/base and
data/ (`python -m ftbench model`, `python -m ftbench data`); it writes nothing.

usage: python bench/galore_drift.py STEPS [MICRO_BATCH_TOKENS|null]
  MICRO_BATCH_TOKENS overrides methods.galore.micro_batch_tokens; null = batch_size rows per forward pass, the
  several passes per step where the two modes differ.
"""

import math
import sys
import time

import torch

from ftbench.common import config, paths
from ftbench.recipes import galore
from ftbench.training import loop

ARMS = ("full", "projected")


def arm(p: config.Params, method: config.MethodParams, accumulation: str, total: int):
    """(model, optimizer, scheduler, trainable) for one accumulation mode, with fit()'s schedule."""
    method = method.model_copy(
        update={"galore": method.galore.model_copy(update={"accumulation": accumulation, "layerwise": True})}
    )
    torch.manual_seed(0)
    model, optimizer, _ = galore.setup(paths.BASE, method, p, seed=0)
    model.train()
    scheduler = loop.schedule(p.train.schedule, optimizer, math.ceil(p.train.warmup_ratio * total), total)
    return model, optimizer, scheduler, [t for g in optimizer.param_groups for t in g["params"]]


def main(n_steps: int, budget: str | None) -> None:
    p = config.load()
    p = p.model_copy(update={"train": p.train.model_copy(update={"max_steps": n_steps})})
    dataset = next(iter(p.data.datasets))
    rows = paths.split_rows(dataset, "train")
    method = p.methods["galore"]
    if budget is not None:
        method = method.model_copy(update={"micro_batch_tokens": None if budget == "null" else int(budget)})
    per_step = method.batch_size * method.grad_accum
    method = method.model_copy(update={"epochs": math.ceil(n_steps * per_step / len(rows))})
    steps = loop.optimizer_steps(rows, method, p, seed=0)
    arms = {a: arm(p, method, a, len(steps)) for a in ARMS}
    print(
        f"galore on {dataset}: {len(rows)} rows, {len(steps)} steps of {per_step} rows, "
        f"micro_batch_tokens {method.micro_batch_tokens}, max_grad_norm {p.train.max_grad_norm}",
        flush=True,
    )
    print(
        "step passes loss_full loss_projected rel_diff grad_norm_full grad_norm_projected max_rel mean_rel s"
    )
    diffs = []
    for k, micro in enumerate(steps, 1):
        t0 = time.perf_counter()
        out = {a: loop.train_step(galore.RECIPE, *arms[a], micro, p) for a in ARMS}
        full, projected = out["full"]["loss"], out["projected"]["loss"]
        diffs.append(abs(projected - full) / abs(full))
        print(
            f"{k} {len(micro)} {full:.6f} {projected:.6f} {diffs[-1]:.2e} {out['full']['grad_norm']:.4f} "
            f"{out['projected']['grad_norm']:.4f} {max(diffs):.2e} {sum(diffs) / len(diffs):.2e} "
            f"{time.perf_counter() - t0:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
