"""Full fine-tuning: every parameter trained by AdamW (fused on a GPU), fp32 master weights under bf16
autocast; the quality and memory upper bound that GaLore claims to approach."""

from __future__ import annotations

from pathlib import Path

import torch

from ftbench.common import config
from ftbench.loading import load_model
from ftbench.recipes import Recipe, adamw, checkpoint_activations


class Full(Recipe):
    def setup(self, init: Path, method: config.MethodParams, p: config.Params, seed: int) -> tuple:
        model = load_model(init, dtype=torch.float32)
        checkpoint_activations(model, p, frozen_input=False)
        trainable = list(model.parameters())
        return model, adamw(trainable, method.lr, p), {"trainable_params": sum(t.numel() for t in trainable)}


RECIPE = Full()
