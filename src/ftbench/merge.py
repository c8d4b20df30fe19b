"""Merge stage: fold a QLoRA adapter into a full-precision model, the hybrid's stage-2 start.

peft's `merge_and_unload()` on a 4-bit model re-quantizes the merged weights, and deltas smaller
than an NF4 step vanish; here the delta is added in fp32 to the dequantized NF4 weights the adapter
was trained against (or, by `merge.<name>.base: original`, to the unquantized weights).
"""

from __future__ import annotations

from pathlib import Path

import bitsandbytes.functional as bnbf
import torch
from peft.tuners.lora import LoraLayer

from ftbench import commands, config, paths, recipes, resources, tracking
from ftbench.atomic import atomic_path, write_json
from ftbench.errors import UserError, stage_main
from ftbench.loading import load_model, load_tokenizer
from ftbench.progress import LOG


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


def run(name: str, p: config.Params) -> dict:
    merge_base = p.merge[name].base
    facts = {}
    tokenizer = load_tokenizer(paths.BASE)
    with atomic_path(paths.model_dir(f"merged/{name}"), is_dir=True) as out:
        recipe = recipes.get(p.methods[name].recipe)
        for run in p.runs(name):
            adapter = paths.run_dir(name, run)
            trained = recipe.load_trained(paths.BASE, adapter)
            model, stats = merged_model(paths.BASE, adapter, merge_base, trained)
            model.save_pretrained(out / run.key, safe_serialization=True)
            tokenizer.save_pretrained(out / run.key)
            facts[run.key] = {"base": merge_base, **stats}
            LOG.info(f"merge {name}/{run.key}: {stats['matrices']} matrices onto {merge_base} weights")
    write_json(paths.METRICS / "merge" / f"{name}.json", facts)
    return facts


@stage_main
def main(argv: list[str]) -> None:
    p, name = commands.parse("merge", argv)
    resources.cap_gpu_memory(p.resources.max_gpu_memory_gib)
    with tracking.stage(f"merge-{name}", p, method=name, merge_base=p.merge[name].base) as st:
        run(name, p)
        st.artifacts.append(paths.METRICS / "merge" / f"{name}.json")


if __name__ == "__main__":
    main()
