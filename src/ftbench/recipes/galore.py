"""GaLore: full-parameter training whose optimizer state lives in a low-rank gradient projection.

The optimizer is built here rather than through Trainer's `optim="galore_adamw"`, which passes only
the learning rate and silently drops betas, eps and weight decay.

`galore.layerwise: true` keeps GaLore's update but never holds the whole model's gradient at once: a
hook projects each matrix's gradient the moment backward completes it and frees it. The stock layerwise
mode (Trainer's `galore_adamw_layerwise`) steps inside that hook and so refuses gradient accumulation;
here the step still happens once per optimizer step, so accumulation works. On Gemma-3-1B this drops a
2.8 GB fp32 gradient. `galore.accumulation` says when the hook projects:

- `full` (GaLore as published): on the step's last backward pass only, when `.grad` holds the step's
  whole gradient. Its squared norm is recorded for clipping and a refresh step takes its basis from
  it, so clipping and the update equal galore-torch's GaLoreAdamW after `clip_grad_norm_` (projection
  is linear: projecting then scaling equals scaling then projecting).
- `projected`: on every pass, into a low-rank accumulator. A step of several passes then never holds a
  full gradient, but a refresh takes its basis from the first pass and clipping uses the norm of the
  projected gradients: a different optimizer from the published one, which the report names
  (`config.GaloreMethod.deviations`).
"""

from __future__ import annotations

from pathlib import Path

from ftbench.common import config
from ftbench.recipes import GaloreHooks, galore_base, galore_optimizer, split_parameters


def setup(init: Path, method: config.MethodParams, p: config.Params, seed: int):
    """fp32 master weights (bf16 autocast on the GPU) and GaLoreAdamW (layerwise: its accumulating form).

    Returns (model, optimizer, facts to record: which parameters were projected and which were not).
    """
    model = galore_base(init, method.galore, p)
    projected, plain = split_parameters(model)
    optimizer = galore_optimizer(projected, plain, method.lr, method.galore, p)
    facts = {"projected": [n for n, _ in projected], "not_projected": [n for n, _ in plain]}
    return model, optimizer, facts


class GaLore(GaloreHooks):
    """Full-parameter training, the whole model saved; the optimizer is this module's."""

    def setup(self, init: Path, method: config.MethodParams, p: config.Params, seed: int) -> tuple:
        return setup(init, method, p, seed)

    def optimizer_state(self, optimizer) -> dict:
        return optimizer.checkpoint_state()

    def load_optimizer_state(self, optimizer, state: dict) -> None:
        optimizer.load_checkpoint_state(state)


RECIPE = GaLore()
