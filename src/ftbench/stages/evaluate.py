"""Evaluate stage: a model (the base, or a method's, in the form its recipe scores) answers each test
split greedily (ftbench.evaluation.generate), and the answers are scored (ftbench.evaluation.score)."""

from __future__ import annotations

import math
from collections.abc import Callable

from ftbench import recipes
from ftbench.common import commands, config, distributed, paths, resources, tracking
from ftbench.common.progress import LOG
from ftbench.evaluation.generate import generate, generation_prompts
from ftbench.evaluation.score import logged, scored_run, summarize
from ftbench.loading import compute_dtype, configure_attention, load_model, load_tokenizer
from ftbench.loss import CONTINUITY_RTOL, continuity, mean_loss

# The continuity check (evaluate.qlora_form: merged) compares the merged copy's teacher-forced loss with
# NF4 + adapter's on the first CONTINUITY_ROWS test rows: 32 rows are hundreds to thousands of answer
# tokens, over which per-token rounding differences average out, for 32 rows' forward passes per form,
# little next to generating the answers (max_new_tokens passes per batch).
CONTINUITY_ROWS = 32


def load_for_eval(name: str, run: config.Run, p: config.Params):
    """The base model, or a method's model as its recipe scores it (e.g. an adapter on its base)."""
    if name == "base":
        return load_model(paths.BASE, compute_dtype())
    return recipes.get(p.methods[name].recipe).load_trained(paths.BASE, paths.run_dir(name, run))


def scored_form(name: str, p: config.Params) -> str | None:
    """The form a method's model is scored in, for metrics/eval (Recipe.scored_form: `nf4+adapter`,
    `merged-<dtype it generated in>`); None for the base and models scored as saved."""
    return None if name == "base" else recipes.get(p.methods[name].recipe).scored_form(p)


def merges_nf4(name: str, p: config.Params) -> bool:
    """Whether evaluation merges the adapter into the dequantized NF4 weights (evaluate.qlora_form)."""
    return (
        name != "base"
        and recipes.get(p.methods[name].recipe).nf4_adapter
        and p.evaluate.qlora_form == "merged"
    )


def merged_for_eval(trained, recipe, adapter, rows: list[dict], p: config.Params, label: str):
    """The adapter merged into the exact dequantized NF4 weights it was trained on (the QLoRA recipe's
    merge, in fp32), cast to the compute dtype, and the continuity check that it scores as NF4 + adapter
    does."""
    # merged before the NF4 model runs: on some CPUs bitsandbytes repacks its weights then (qlora.nf4_weight)
    merged, _ = recipe.merged_model(paths.BASE, adapter, "nf4", trained=trained)
    merged = merged.to(compute_dtype())
    check = rows[:CONTINUITY_ROWS]
    adapter_loss = mean_loss(trained, check, p.train.fused_cross_entropy)
    merged_loss = mean_loss(merged, check, p.train.fused_cross_entropy)
    check_facts = continuity(
        adapter_loss,
        merged_loss,
        CONTINUITY_RTOL,
        where=f"evaluate {label}, the adapter merged into the NF4 weights, first {len(check)} test rows",
        trained_form="NF4 + adapter",
        fix="set `evaluate.qlora_form: adapter` to score NF4 + adapter",
        trained_key="nf4_adapter_loss",
    )
    return merged, {"rows": len(check), **check_facts}


def model_for_eval(name: str, run: config.Run, p: config.Params, rows: list[dict], record: resources.Record):
    """The model `name` is scored as on `run` (evaluate.qlora_form), and what loading it checked."""
    with record.phase("load"):
        model = load_for_eval(name, run, p)
    facts = {}
    if merges_nf4(name, p):
        with record.phase("merge"):
            recipe = recipes.get(p.methods[name].recipe)
            model, facts["continuity"] = merged_for_eval(
                model, recipe, paths.run_dir(name, run), rows, p, f"{name}/{run.key}"
            )
    return model, facts


def evaluate_run(name: str, run: config.Run, p: config.Params, tokenizer, record: resources.Record) -> dict:
    LOG.info(f"evaluate {name} on {run.key}")
    rows = paths.split_rows(run.dataset, "test")
    model, facts = model_for_eval(name, run, p, rows, record)
    with record.phase("generate"):
        predictions = generate(model, tokenizer, generation_prompts(rows), p)
    with record.phase("test_loss"):
        loss = mean_loss(model, rows, p.train.fused_cross_entropy)
    return scored_run(
        name, run, rows, predictions, p, record, {"loss": loss, "perplexity": math.exp(loss), **facts}
    )


def run(name: str, p: config.Params, st: tracking.StageRun) -> dict:
    tokenizer = load_tokenizer(paths.BASE)
    runs = {r.key: evaluate_run(name, r, p, tokenizer, st.record) for r in p.runs(name)}
    form = scored_form(name, p)
    return summarize(name, p, runs, {"scored_form": form} if form else {})


def evaluation_stage(
    command: str, score: Callable[[str, config.Params, tracking.StageRun], dict], argv
) -> None:
    """The stage `python -m ftbench <command> <name>` (evaluate, ensemble): `score` writes
    metrics/eval/<name>.json and metrics/predictions/<name>, measured as the stage evaluate-<name>."""
    p, name = commands.parse(command, argv)
    distributed.launch_or_init(p, command, argv)
    resources.cap_gpu_memory(p.resources.max_gpu_memory_gib)
    configure_attention()
    with tracking.stage(f"evaluate-{name}", p, method=name) as st:
        summary = score(name, p, st)
        if not distributed.is_main():
            return
        st.log_step(0, {k: summary[k] for k in logged(summary["runs"])})
        st.artifacts += [paths.EVAL / f"{name}.json", paths.PREDICTIONS / name]


def main(argv: list[str]) -> None:
    evaluation_stage("evaluate", run, argv)
