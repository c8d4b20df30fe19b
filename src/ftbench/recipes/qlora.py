"""QLoRA: the frozen base in 4-bit NF4 (bitsandbytes) with trainable LoRA adapters (peft)."""

from __future__ import annotations

from pathlib import Path

from ftbench import config
from ftbench.loading import compute_dtype, load_nf4
from ftbench.recipes import AdapterRecipe


class QLoRA(AdapterRecipe):
    """Scored as evaluate.qlora_form says: the adapter on the NF4 base (load_trained), or merged into
    the dequantized NF4 weights by evaluation (merge.merged_model) after a continuity check."""

    nf4_adapter = True

    def base(self, path: Path):
        return load_nf4(path)

    def scored_form(self, p: config.Params) -> str:
        dtype = str(compute_dtype()).removeprefix("torch.")
        return "nf4+adapter" if p.evaluate.qlora_form == "adapter" else f"merged-{dtype}"


RECIPE = QLoRA()
