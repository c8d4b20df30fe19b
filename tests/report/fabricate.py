"""A fabricated study: consistent outputs of every stage before the report, with known quality
and costs, and the numbers the report must make of them."""

import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl, write_json, write_jsonl
from ftbench.evaluation import stats
from ftbench.report import costs, inputs, study

METRICS = ("rouge1", "rouge2", "rougeL", "exact_match")  # means over examples, as evaluate reports them
# every model and stage comes from params.yaml (study.models, costs.cost_stages): a method added there is
# fabricated, reported and checked by the report tests without editing them


def fabricated_quality(p: config.Params) -> dict[str, float]:
    """Each model's mean ROUGE and share of right answers (x / 60): base the least, the compared models
    drawn from a seeded generator between 30 and 45, and the hybrid of study.roles well above the rest
    (50), so that it beats its qlora stage and meets the seed's expectation by a margin the tests resolve."""
    rng = np.random.default_rng(1)
    quality = {"base": 20.0, **{name: float(rng.uniform(30, 45)) for name in study.compared(p)}}
    trio = study.roles(p)
    if trio is not None:
        quality[trio[0]] = 50.0
    return quality


def fabricated_resources(p: config.Params) -> dict[str, tuple[float, float, int]]:
    """stage -> (wall s, peak GPU GiB, tokens trained) for every record the report reads, drawn from a
    seeded generator: at least 1 GiB of GPU (a base evaluation of 0.5 GiB has the least memory), tokens
    on training stages only."""
    rng = np.random.default_rng(2)
    stages = dict.fromkeys(s for name in study.models(p) for s in costs.cost_stages(name, p))
    return {
        stage: (
            float(rng.integers(2, 16)),
            float(rng.integers(2, 13)) / 2,
            int(rng.integers(5, 16)) * 10 if stage.startswith("train-") else 0,
        )
        for stage in stages
    }


def fabricate_stage_outputs(p: config.Params, final_answers: Collection[str] = ()) -> None:
    """Consistent outputs of every stage before the report, with known quality and costs; on the
    datasets named in `final_answers`, GSM8K-style references (`#### <answer>`) and their exact-match
    scores, as evaluate writes them."""
    rng, quality = np.random.default_rng(0), fabricated_quality(p)
    for name in study.models(p):
        runs = {}
        for run in p.runs(name):
            rows, graded = [], run.dataset in final_answers
            for i in range(20):
                ref = f"the answer to question {i} is {i + 1}" + (f"\n#### {i + 1}" if graded else "")
                pred = ref if rng.random() < quality[name] / 60 else f"maybe {i}"
                rouge = quality[name] + rng.normal(0, 5)
                rows.append(
                    {
                        "prompt": f"q{i}",
                        "reference": ref,
                        "prediction": pred,
                        "bleu_stats": stats.bleu_stats(pred, ref),
                        "rouge1": rouge,
                        "rouge2": rouge,
                        "rougeL": rouge,
                    }
                )
                if graded:
                    rows[-1]["exact_match"] = stats.exact_match(pred, ref)
            write_jsonl(paths.predictions_file(name, run), rows)
            runs[run.key] = {
                "bleu4": stats.corpus_bleu(np.array([r["bleu_stats"] for r in rows])),
                **{k: float(np.mean([r[k] for r in rows])) for k in study.carried(METRICS, rows[0])},
                **({} if name in p.ensembles else {"loss": 1.0, "perplexity": 2.718}),  # as ensemble writes
                "n": 20,
            }
        # as evaluate's summary: each metric's mean over the runs that carry it
        mean = {
            k: float(np.mean(values))
            for k in ("bleu4", *METRICS)
            if (values := [r[k] for r in runs.values() if k in r])
        }
        write_json(
            paths.EVAL / f"{name}.json", {**mean, "convention": "BLEU-4: sacrebleu (tok:13a).", "runs": runs}
        )
    for stage, (wall, gpu, tokens) in fabricated_resources(p).items():
        write_json(
            paths.RESOURCES / f"{stage}.json",
            {
                "stage": stage,
                "wall_s": wall,
                "peak_gpu_gib": gpu,
                "peak_rss_gib": 1.0,
                "tokens": tokens,
                "device": "cpu",
            },
        )
    paths.BASE.mkdir(parents=True)  # the report re-tokenizes the answers with the base tokenizer
    shutil.copy(Path(p.model.source) / "tokenizer.json", paths.BASE)
    for name in p.methods:
        (paths.CURVES / name).mkdir(parents=True)
        for run in p.runs(name):
            (paths.CURVES / name / f"{run.key.replace('/', '-')}.csv").write_text(
                "step,loss,lr\n1,2.0,1e-4\n2,1.5,1e-4\n"
            )
    write_json(
        paths.DATA_SUMMARY,
        {
            "builtin": {
                "format": "alpaca",
                "rows_read": 100,
                "duplicates": 0,
                "empty": 0,
                "overlong_dropped": 1,
                "overlong_truncated": 0,
                "rows_with_chat_markup": 0,
                "splits": {"train": 16, "validation": 4, "test": 20},
                "mean_tokens": 30.0,
            }
        },
    )


def expected_cost(name: str, p: config.Params) -> dict:
    """A model's cost per run from the fabricated records: its stages' wall time and tokens trained
    summed and divided by its runs, their largest GPU peak."""
    resources = fabricated_resources(p)
    stages, runs = [resources[s] for s in costs.cost_stages(name, p)], len(p.runs(name))
    return {
        "wall_s": sum(wall for wall, _, _ in stages) / runs,
        "peak_gpu_gib": max(gpu for _, gpu, _ in stages),
        "tokens_trained": sum(tokens for _, _, tokens in stages) / runs,
    }


def answer_tokens(p: config.Params, name: str) -> int:
    """Tokens of a model's saved answers over its runs, by the transformers tokenizer of the base model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(p.model.source)
    rows = [r for run in p.runs(name) for r in read_jsonl(paths.predictions_file(name, run))]
    return sum(len(tokenizer(r["prediction"], add_special_tokens=False).input_ids) for r in rows)


def recomputed(p: config.Params, name: str, metric: str) -> tuple[float, float, float]:
    """A model's point estimate and 95% interval, straight from its predictions file."""
    scores = inputs.per_example(name, config.Run("builtin", None if name == "base" else 0))
    idx = stats.resample_indices(len(scores["rougeL"]), p.report.resamples, p.seed)
    return (stats.point(metric, scores[metric]), *stats.confidence(scores, metric, idx))
