"""QLoRA: the frozen base in 4-bit NF4 (bitsandbytes) with trainable LoRA adapters (peft)."""

from __future__ import annotations

from pathlib import Path

import bitsandbytes.functional as bnbf
import torch
from peft.tuners.lora import LoraLayer

from ftbench.common import config
from ftbench.common.errors import UserError
from ftbench.loading import compute_dtype, load_model, load_nf4
from ftbench.recipes import AdapterRecipe


def lora_delta(layer: LoraLayer, adapter: str = "default") -> torch.Tensor:
    """scaling * B @ A in fp32."""
    a = layer.lora_A[adapter].weight.float()
    b = layer.lora_B[adapter].weight.float()
    return layer.scaling[adapter] * (b @ a)


def nf4_weight(layer: LoraLayer) -> torch.Tensor:
    """The exact dequantized NF4 weight under the adapter, in fp32.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for its own kernel on the layer's first
    forward pass in eval mode, and dequantize_4bit then misreads it (measured: the merged model's loss off
    by 4e-4 instead of 1e-5): the adapter is merged before the NF4 model runs."""
    weight = layer.get_base_layer().weight
    if getattr(weight.quant_state, "packing_format_for_cpu", False):
        raise RuntimeError("merge the adapter before the NF4 model runs: bitsandbytes repacked its weights")
    return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()


def merged_model(base: Path, adapter: Path, merge_base: str, trained):
    """A full-precision (fp32) model whose adapted linear weights are base weight + LoRA delta.

    `trained` is the adapter loaded on the NF4 base (its recipe's load_trained(base, adapter)); a caller
    that also runs it (evaluation's continuity check) passes its own, so the NF4 model is loaded once."""
    full = load_model(base, dtype=torch.float32)
    stats = {"matrices": 0, "relative_delta": 0.0}
    for name, layer in trained.get_base_model().named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        target = full.get_submodule(name)
        start = nf4_weight(layer) if merge_base == "nf4" else target.weight.data.float()
        delta = lora_delta(layer).to(start.device)
        target.weight.data = (start + delta).to(target.weight.dtype)
        stats["matrices"] += 1
        stats["relative_delta"] += float(delta.norm() / start.norm())
    if not stats["matrices"]:
        raise UserError(f"{adapter}: no LoRA layers found; is it a qlora method's output?")
    stats["relative_delta"] = round(stats["relative_delta"] / stats["matrices"], 6)
    return full, stats


class QLoRA(AdapterRecipe):
    """Scored as evaluate.qlora_form says: the adapter on the NF4 base (load_trained), or merged into
    the dequantized NF4 weights (merged_model) after a continuity check; the merge stage folds it too."""

    nf4_adapter = True

    def base(self, path: Path):
        return load_nf4(path)

    merged_model = staticmethod(merged_model)

    def scored_form(self, p: config.Params) -> str:
        dtype = str(compute_dtype()).removeprefix("torch.")
        return "nf4+adapter" if p.evaluate.qlora_form == "adapter" else f"merged-{dtype}"


RECIPE = QLoRA()
