"""Multi-adapter hybrid: LoRA adapters and the base's own matrices trained together, in one pass.

The seed's alternative to the staged hybrid: over an fp32 base (NF4 weights cannot take GaLore's updates),
each forward/backward pass trains peft's LoRA adapters (torch's AdamW at `lora_lr`) and the attention and
MLP matrices under them (GaLore at `lr`, with the method's `galore` settings, the same selection and
optimizer as the galore recipe). The two optimizers act as one (`JointOptimizer`): one step, one schedule
scaling both learning rates, one clipping by the norm of the whole gradient, both states in a checkpoint.

For inference the LoRA delta is merged into the GaLore-updated weights (peft's merge_and_unload, in
fp32), and one model is saved in the compute dtype, after a continuity check: the merged model's
validation loss must match the trained model's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftbench.common import config
from ftbench.loading import compute_dtype
from ftbench.loss import CONTINUITY_RTOL, continuity
from ftbench.recipes import GaloreHooks, adamw, add_adapters, galore_base, galore_optimizer, split_parameters


class JointOptimizer(torch.optim.Optimizer):
    """GaLore on the base matrices and AdamW on the adapters, stepped, zeroed, scheduled and checkpointed
    as one optimizer (GaloreHooks.clip clips both by the whole gradient's norm).

    Its param_groups are the two optimizers' own group dicts (GaLore's first: the logged learning rate is
    the base's), so a scheduler's change of `lr` reaches the optimizer that uses it.
    """

    def __init__(self, galore: torch.optim.Optimizer, adapters: torch.optim.AdamW) -> None:
        self.galore, self.adapters = galore, adapters
        super().__init__(galore.param_groups + adapters.param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        self.galore.step()
        self.adapters.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.galore.zero_grad(set_to_none)  # also drops gradients a layerwise GaLore projected
        self.adapters.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        """Both states as tensors and plain data (GaLore's projectors too), for a weights_only load."""
        return {"galore": self.galore.checkpoint_state(), "adapters": self.adapters.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.galore.load_checkpoint_state(state["galore"])
        self.adapters.load_state_dict(state["adapters"])
        # loading replaces each optimizer's group dicts: share the new ones, which the schedule must set
        self.param_groups = self.galore.param_groups + self.adapters.param_groups


class LoraGalore(GaloreHooks):
    """Both kinds of training at once; saved as one merged model, scored as saved."""

    def setup(self, init: Path, method: config.MethodParams, p: config.Params, seed: int) -> tuple:
        model = galore_base(init, method.galore, p)
        projected, plain = split_parameters(model)  # before peft: its adapters are attention/MLP matrices too
        model = add_adapters(model, method.lora, seed)  # freezes every parameter but the adapters
        for _, t in projected + plain:
            t.requires_grad_(True)
        adapters = [t for n, t in model.named_parameters() if "lora_" in n]
        optimizer = JointOptimizer(
            galore_optimizer(projected, plain, method.lr, method.galore, p),
            adamw(adapters, method.lora_lr, p),
        )
        facts = {
            "projected": [n for n, _ in projected],
            "not_projected": [n for n, _ in plain],
            "adapter_params": sum(t.numel() for t in adapters),
        }
        return model, optimizer, facts

    def galore_part(self, optimizer: JointOptimizer):
        return optimizer.galore

    def to_save(self, model, trained_loss: float | None, score: Callable[[Any], float]) -> tuple[Any, dict]:
        """The LoRA delta merged into the GaLore-updated weights (fp32), cast to the compute dtype, if
        its loss on the check rows is the trained model's (`trained_loss`, else scored here), with the
        check's numbers; a UserError otherwise."""
        if trained_loss is None:
            trained_loss = score(model)  # before merge_and_unload, which changes the model in place
        merged = model.merge_and_unload().to(compute_dtype())
        check = continuity(
            trained_loss,
            score(merged),
            CONTINUITY_RTOL,
            where="train, the LoRA adapters merged into the trained weights, on the check rows",
            trained_form="the trained model",
            fix="nothing was saved; report this line as a bug (the adapters' delta was lost in the merge)",
        )
        return merged, {"merge_continuity": check}


RECIPE = LoraGalore()
