"""LoRA: QLoRA's adapters over the unquantized base (bf16 on a GPU, fp32 on the CPU), the control that
isolates what 4-bit quantization costs in quality and saves in memory."""

from __future__ import annotations

from pathlib import Path

from ftbench.common import config
from ftbench.loading import compute_dtype, load_model
from ftbench.recipes import AdapterRecipe


class LoRA(AdapterRecipe):
    def base(self, path: Path):
        return load_model(path, dtype=compute_dtype())

    def load_trained(self, base: Path, folder: Path):
        """The adapter merged into a copy of the base (peft's merge_and_unload: W + scale * BA, in the
        compute dtype): generation then runs no adapter matmuls, like qlora's default merged form. Unlike
        NF4, the unquantized weights take the sum without re-quantizing it, so no continuity check."""
        return super().load_trained(base, folder).merge_and_unload()

    def scored_form(self, p: config.Params) -> str:
        return f"merged-{str(compute_dtype()).removeprefix('torch.')}"


RECIPE = LoRA()
