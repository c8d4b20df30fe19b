"""Merge stage: fold a QLoRA adapter into a full-precision model, the hybrid's stage-2 start.

peft's `merge_and_unload()` on a 4-bit model re-quantizes the merged weights, and deltas smaller
than an NF4 step vanish; here the delta is added in fp32 to the dequantized NF4 weights the adapter
was trained against (or, by `merge.<name>.base: original`, to the unquantized weights).
"""

from __future__ import annotations

from ftbench import recipes
from ftbench.common import commands, config, paths, resources, tracking
from ftbench.common.atomic import atomic_path, write_json
from ftbench.common.progress import LOG
from ftbench.loading import load_tokenizer


def run(name: str, p: config.Params) -> dict:
    merge_base = p.merge[name].base
    facts = {}
    tokenizer = load_tokenizer(paths.BASE)
    with atomic_path(paths.model_dir(f"merged/{name}"), is_dir=True) as out:
        recipe = recipes.get(p.methods[name].recipe)
        for run in p.runs(name):
            adapter = paths.run_dir(name, run)
            trained = recipe.load_trained(paths.BASE, adapter)
            model, stats = recipe.merged_model(paths.BASE, adapter, merge_base, trained)
            model.save_pretrained(out / run.key, safe_serialization=True)
            tokenizer.save_pretrained(out / run.key)
            facts[run.key] = {"base": merge_base, **stats}
            LOG.info(f"merge {name}/{run.key}: {stats['matrices']} matrices onto {merge_base} weights")
    write_json(paths.METRICS / "merge" / f"{name}.json", facts)
    return facts


def main(argv: list[str]) -> None:
    p, name = commands.parse("merge", argv)
    resources.cap_gpu_memory(p.resources.max_gpu_memory_gib)
    with tracking.stage(f"merge-{name}", p, method=name, merge_base=p.merge[name].base) as st:
        run(name, p)
        st.artifacts.append(paths.METRICS / "merge" / f"{name}.json")
