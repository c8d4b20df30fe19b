"""What each model cost: the chain of stages that built it, their wall time and tokens summed per run,
their largest memory peaks, and the tokens of its answers."""

from __future__ import annotations

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl

# An evaluation's phases before it generates: the model loaded (and merged) as it is scored
MODEL_PHASES = ("load", "merge")


def chain(name: str, p: config.Params) -> list[str]:
    """Resource records of the stages that built a model, earliest first (base: none). An ensemble is built
    by its members' stages; its cost is mostly at inference (two models, two passes: the Resources
    section's inference lines)."""
    if name == "base":
        return []
    if name in p.ensembles:
        return [*dict.fromkeys(s for m in p.ensembles[name].members for s in chain(m, p))]
    init = p.methods[name].init
    if init == "base":
        return [f"train-{name}"]
    source = init.split("/", 1)[1]
    return [*chain(source, p), f"merge-{source}", f"train-{name}"]


def cost_stages(name: str, p: config.Params) -> list[str]:
    """Resource records a model's total cost sums: the stages that built it, then its evaluation. The
    model stage (download and convert the base weights) is shared by every model and left out."""
    return [*chain(name, p), f"evaluate-{name}"]


def cost(name: str, p: config.Params, resources: dict, generated: int) -> dict:
    """A model's total cost per run: wall time summed over its cost stages, the tokens its training
    stages trained on and the `generated` tokens of its answers, each divided by its runs (each stage ran
    them all: one per dataset, and per seed for a trained model, so that a trained model is not charged
    for its seeds beside the base model); a training stage that resumed from a checkpoint is charged its
    earlier attempts' training seconds too. Memory: the largest peak of its stages (GPU: model_gpu_peaks)."""
    runs = len(p.runs(name))
    stages = [resources[s] for s in cost_stages(name, p)]
    gpu = model_gpu_peaks(stages[:-1], stages[-1])  # cost_stages: the chain, then the evaluation
    return {
        "wall_s": sum(s["wall_s"] + s.get("resumed_train_s", 0) for s in stages) / runs,
        "peak_gpu_gib": max(gpu) if gpu else None,
        "peak_rss_gib": max(s["peak_rss_gib"] for s in stages),
        "tokens_trained": sum(resources[s].get("tokens", 0) for s in chain(name, p)) / runs,
        "tokens_generated": generated / runs,
    }


def model_gpu_peaks(built: list[dict], evaluation: dict) -> list[float]:
    """The GPU peaks that are the model's cost: the stages that built it, and its evaluation up to the
    model as scored (its MODEL_PHASES). Not generation's: evaluate.batch_size: auto fills whatever memory
    the GPU has free, so its peak measures the GPU, not the method (the per-stage table has it). A record
    without phase peaks counts whole."""
    peaks = [s["peak_gpu_gib"] for s in built if s["peak_gpu_gib"] is not None]
    phases = evaluation.get("phase_peak_gpu_gib")
    if phases:
        return peaks + [v for k, v in phases.items() if k in MODEL_PHASES]
    return peaks + ([evaluation["peak_gpu_gib"]] if evaluation["peak_gpu_gib"] is not None else [])


def generated_tokens(name: str, p: config.Params, tokenizer) -> int:
    """Tokens of a model's answers over all its runs. evaluate does not record the count, so the saved
    answers are re-tokenized (cheap next to the bootstrap); the stop token that ended each is not counted."""
    answers = [r["prediction"] for run in p.runs(name) for r in read_jsonl(paths.predictions_file(name, run))]
    return sum(len(e.ids) for e in tokenizer.encode_batch(answers, add_special_tokens=False))


def memory_axis(costs: dict[str, dict]) -> tuple[str, str]:
    """(label, cost key) of the memory axis: the GPU peak where every model has one, else peak RSS."""
    if all(c["peak_gpu_gib"] is not None for c in costs.values()):
        return "peak GPU GiB", "peak_gpu_gib"
    return "peak RSS GiB", "peak_rss_gib"
