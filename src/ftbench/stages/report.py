"""Report stage: metrics/report.md and a self-contained metrics/report.html (plots embedded).

Quality with paired-bootstrap intervals, pairwise differences with p-values, the seed's expectation,
every evaluated model ranked by quality against its total cost (a model's cost is its whole chain: the
hybrid's is the QLoRA stage + the merge + its GaLore stage + its evaluation) with the differences the
test set can resolve, resources per stage and per model, Pareto and loss-curve plots, the data summary
and provenance.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from ftbench.common import commands, config, paths, tracking
from ftbench.common.atomic import atomic_path, read_jsonl, write_json
from ftbench.common.errors import UserError
from ftbench.common.progress import bar
from ftbench.common.resources import package_versions
from ftbench.evaluation import stats

HEADLINE = ("bleu4", "rougeL")
PRIMARY = HEADLINE[0]  # the ranking's order
EXACT_MATCH = stats.EXACT_MATCH  # only in runs on data with final `####` answers (stats.has_final_answers)
COMPARED = (*HEADLINE, EXACT_MATCH)  # metrics in the differences, the expectation and report.json
LABELS = {  # table order
    "bleu4": "BLEU-4",
    "rougeL": "ROUGE-L",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    EXACT_MATCH: "Exact match",
}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    caption: str
    png: bytes


Section = tuple[str, list]  # title, [str | Table | Figure]
Tick = Callable[[int], object]  # a progress bar's update: n more intervals drawn


# ---------------------------------------------------------------- reading


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{path} is missing; run `dvc repro` so every stage before the report has run"
        ) from None


def models(p: config.Params) -> list[str]:
    return ["base", *compared(p)]


def compared(p: config.Params) -> list[str]:
    """The evaluated models that are compared with one another and with base: methods, then ensembles."""
    return [*p.methods, *p.ensembles]


def compared_runs(p: config.Params) -> list[config.Run]:
    """The runs the per-run tables compare models on: a trained model's (dataset, seed) runs; the base
    model stands in each with its run on that dataset (run_for)."""
    return p.runs(next(iter(p.methods)))


def chain(name: str, p: config.Params) -> list[str]:
    """Resource records of the stages that built a model, earliest first (base: none). An ensemble is built
    by its members' stages; its cost is mostly at inference (two models, two passes: inference_lines)."""
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


def per_example(name: str, run: config.Run) -> stats.Scores:
    rows = read_jsonl(paths.predictions_file(name, run))
    scores = {"bleu4": np.array([r["bleu_stats"] for r in rows], dtype=float)}
    scores.update({k: np.array([r[k] for r in rows]) for k in ("rouge1", "rouge2", "rougeL")})
    if EXACT_MATCH in rows[0]:  # evaluate scored it on every row of this split
        scores[EXACT_MATCH] = np.array([r[EXACT_MATCH] for r in rows])
    return scores


def carried(metrics: Iterable[str], numbers: Mapping) -> list[str]:
    """Those of `metrics` (in their order) that a run's scores or numbers hold: exact match only where
    the dataset has final answers."""
    return [m for m in metrics if m in numbers]


def run_for(name: str, run: config.Run) -> config.Run:
    """The base model has one run per dataset, whatever the training seed."""
    return config.Run(run.dataset, None) if name == "base" else run


# ---------------------------------------------------------------- numbers


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def estimate(s: stats.Scores, metric: str, indices: np.ndarray) -> dict:
    lo, hi = stats.confidence(s, metric, indices)
    return {"value": stats.point(metric, s[metric]), "ci_low": lo, "ci_high": hi}


def quality(p: config.Params, evals: dict, scores: dict, indices: dict, tick: Tick) -> dict:
    """model -> its run key -> each metric's point estimate and 95% interval, test loss and perplexity."""
    out: dict = {}
    for name in models(p):
        for run in p.runs(name):
            s, idx = scores[name, run.key], indices[run.dataset]
            numbers = {m: estimate(s, m, idx) for m in carried(LABELS, s)}
            tick(len(numbers))
            e = evals[name]["runs"][run.key]
            out.setdefault(name, {})[run.key] = {
                **numbers,
                "test_loss": e.get("loss"),  # an ensemble's runs have none
                "perplexity": e.get("perplexity"),
            }
    return out


def quality_section(p: config.Params, evals: dict, numbers: dict, indices: dict) -> Section:
    parts: list = []
    for run in compared_runs(p):
        rows = []
        metrics = carried(LABELS, numbers["base"][run.dataset])  # one dataset: the same for every model
        for name in models(p):
            q = numbers[name][run_for(name, run).key]
            rows.append(
                [
                    name,
                    *(f"{q[m]['value']:.2f} [{q[m]['ci_low']:.2f}, {q[m]['ci_high']:.2f}]" for m in metrics),
                    fmt(q["test_loss"], 3),
                    fmt(q["perplexity"], 1),
                ]
            )
        parts += [
            f"**{run.key}** ({len(indices[run.dataset][0])} test examples; 95% paired-bootstrap intervals)",
            Table(["model", *(LABELS[m] for m in metrics), "test loss", "perplexity"], rows),
        ]
    if len(p.seeds) > 1:
        parts += ["**Across training seeds** (mean ± sd; base has no training seed)", seeds_table(p, evals)]
    if "llamafactory" in next(iter(evals["base"]["runs"].values())):
        parts += [
            "**LLaMA-Factory convention** (secondary: character-level sentence BLEU-4 with NLTK "
            "smoothing method 3, ROUGE on jieba words, averaged over examples)",
            llamafactory_table(p, evals),
        ]
    return "Quality", parts


def seeds_table(p: config.Params, evals: dict) -> Table:
    metrics = [m for m in COMPARED if any(m in v for e in evals.values() for v in e["runs"].values())]
    rows = [
        [dataset, name, *(over_seeds(evals[name], dataset, m) for m in metrics)]
        for dataset in p.data.datasets
        for name in models(p)
    ]
    return Table(["dataset", "model", *(LABELS[m] for m in metrics)], rows)


def over_seeds(e: dict, dataset: str, metric: str) -> str:
    """`mean ± sd` of a metric over one model's runs on a dataset (sd 0 for a single run), from its
    metrics/eval file; `-` for exact match on a dataset without final answers."""
    runs = [v for k, v in e["runs"].items() if k.split("/")[0] == dataset]
    if metric not in runs[0]:
        return "-"
    values = np.array([v[metric] for v in runs])
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"


def llamafactory_table(p: config.Params, evals: dict) -> Table:
    rows = [
        [name, key, *(fmt(v["llamafactory"][m]) for m in ("bleu4", "rouge1", "rouge2", "rougeL"))]
        for name in models(p)
        for key, v in evals[name]["runs"].items()
    ]
    return Table(["model", "run", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"], rows)


def pairs(p: config.Params) -> list[tuple[str, str]]:
    """Every later model against every earlier one (methods, then ensembles, in params order), then each
    against base."""
    names = compared(p)
    return [(b, a) for i, a in enumerate(names) for b in names[i + 1 :]] + [(m, "base") for m in names]


def differences(
    p: config.Params, scores: dict, indices: dict, tick: Tick
) -> list[tuple[str, str, str, str, dict]]:
    """(run key, a, b, metric, a − b with its interval and p) for every pair and headline metric."""
    out = []
    for run in compared_runs(p):
        for a, b in pairs(p):
            sa, sb = scores[a, run_for(a, run).key], scores[b, run_for(b, run).key]
            metrics = carried(COMPARED, sa)
            out += [(run.key, a, b, m, stats.compare(sa, sb, m, indices[run.dataset])) for m in metrics]
            tick(len(metrics))
    return out


def differences_section(diffs: list[tuple[str, str, str, str, dict]]) -> Section:
    rows = [
        [
            run_key,
            f"{a} − {b}",
            LABELS[m],
            f"{d['diff']:+.2f}",
            f"[{d['lo']:+.2f}, {d['hi']:+.2f}]",
            f"{d['p']:.3f}",
        ]
        for run_key, a, b, m, d in diffs
    ]
    text = "Paired bootstrap over the same test examples; p is two-sided for 'no difference'."
    return "Differences", [text, Table(["run", "pair", "metric", "difference", "95% interval", "p"], rows)]


def roles(p: config.Params) -> tuple[str, str, str] | None:
    """(hybrid, its qlora stage, a galore-only method) if the methods hold such a trio."""
    for name, m in p.methods.items():
        if m.init.startswith("merged/"):
            source = m.init.split("/", 1)[1]
            galore = [n for n, x in p.methods.items() if x.recipe == "galore" and x.init == "base"]
            if galore:
                return name, source, galore[0]
    return None


def expectations(p: config.Params, scores: dict, indices: dict, tick: Tick) -> list[tuple[str, str, dict]]:
    """(run key, metric, margin with its interval and verdict); none without a hybrid/qlora/galore trio."""
    trio = roles(p)
    if trio is None:
        return []
    w = p.report.expectation_weight
    out = []
    for run in p.runs(trio[0]):
        trio_scores = [scores[x, run.key] for x in trio]
        metrics = carried(COMPARED, trio_scores[0])
        out += [(run.key, m, stats.expectation(*trio_scores, m, indices[run.dataset], w)) for m in metrics]
        tick(len(metrics))
    return out


def interval_count(p: config.Params, scores: dict) -> int:
    """How many bootstrap intervals quality, differences and expectations draw: the report bar's total."""
    trio = roles(p)

    def per_run(name: str, metrics: Iterable[str]) -> list[int]:
        return [len(carried(metrics, scores[name, run.key])) for run in p.runs(name)]

    return (
        sum(sum(per_run(name, LABELS)) for name in models(p))
        + sum(per_run(next(iter(p.methods)), COMPARED)) * len(pairs(p))
        + (sum(per_run(trio[0], COMPARED)) if trio else 0)
    )


def expectation_section(p: config.Params, verdicts: list[tuple[str, str, dict]]) -> Section:
    if not verdicts:
        return "The seed's expectation", ["Not tested: the methods hold no hybrid, qlora and galore trio."]
    h, q, g = roles(p)
    w = p.report.expectation_weight
    rows = [
        [run_key, LABELS[m], f"{e['margin']:+.2f}", f"[{e['lo']:+.2f}, {e['hi']:+.2f}]", e["verdict"]]
        for run_key, m, e in verdicts
    ]
    text = (
        f"Is {h} ≥ {q} + {w} · ({g} − {q})? The margin is {h} − ({q} + {w} · ({g} − {q})); "
        "yes if its 95% interval is above 0, no if below, inconclusive otherwise."
    )
    return "The seed's expectation", [
        text,
        Table(["run", "metric", "margin", "95% interval", "answer"], rows),
    ]


def resources_section(p: config.Params, resources: dict, costs: dict[str, dict]) -> Section:
    stage_rows = [
        [
            r["stage"],
            fmt(r["wall_s"], 1),
            fmt(r.get("cpu_s"), 1),
            fmt(r["peak_rss_gib"]),
            fmt(r["peak_gpu_gib"]),
            fmt(r.get("torch_peak_allocated_gib")),
            f"{r.get('tokens', 0):,}",
            fmt(r.get("tokens_per_s"), 0),
            r.get("device", "-"),
        ]
        for r in resources.values()
    ]
    model_rows = [
        [
            name,
            " + ".join(cost_stages(name, p)),
            fmt(c["wall_s"], 1),
            fmt(c["peak_gpu_gib"]),
            fmt(c["peak_rss_gib"]),
            f"{c['tokens_trained']:,.0f}",
            f"{c['tokens_generated']:,.0f}",
        ]
        for name, c in costs.items()
    ]
    return "Resources", [
        "Per stage (peak GPU: NVML device memory above the stage's starting baseline):",
        Table(
            [
                "stage",
                "wall s",
                "CPU s",
                "peak RSS GiB",
                "peak GPU GiB",
                "torch peak GiB",
                "tokens",
                "tokens/s",
                "device",
            ],
            stage_rows,
        ),
        "Per model and run: summed over the stages that built it and its evaluation, divided by its runs "
        "(peaks: the largest of its stages; the model stage, shared by every model, is not counted; "
        "tokens generated: its answers re-tokenized with the base tokenizer, stop token not counted):",
        Table(
            [
                "model",
                "stages",
                "wall s per run",
                "peak GPU GiB",
                "peak RSS GiB",
                "tokens trained per run",
                "tokens generated per run",
            ],
            model_rows,
        ),
        *inference_lines(p, resources),
    ]


def inference_lines(p: config.Params, resources: dict) -> list[str]:
    """Per ensemble, its evaluation's time and memory next to its members' own evaluations: the seed
    names "inference time 2x, memory 2x" as the ensemble's cost."""

    def measured(stage: str) -> str:
        r = resources[stage]
        memory = f"peak RSS {fmt(r['peak_rss_gib'])} GiB, peak GPU {fmt(r['peak_gpu_gib'])} GiB"
        return f"{stage} {fmt(r['wall_s'], 1)} s, {memory}"

    return [
        f"Inference, {name} ({' + '.join(e.members)}): {measured(f'evaluate-{name}')}; its members alone: "
        + "; ".join(measured(f"evaluate-{m}") for m in dict.fromkeys(e.members))
        + "."
        for name, e in p.ensembles.items()
    ]


def cost(name: str, p: config.Params, resources: dict, generated: int) -> dict:
    """A model's total cost per run: wall time summed over its cost stages, the tokens its training
    stages trained on and the `generated` tokens of its answers, each divided by its runs (each stage ran
    them all: one per dataset, and per seed for a trained model, so that a trained model is not charged
    for its seeds beside the base model); a training stage that resumed from a checkpoint is charged its
    earlier attempts' training seconds too. Memory: the largest peak of its stages."""
    runs = len(p.runs(name))
    stages = [resources[s] for s in cost_stages(name, p)]
    gpu = [s["peak_gpu_gib"] for s in stages if s["peak_gpu_gib"] is not None]
    return {
        "wall_s": sum(s["wall_s"] + s.get("resumed_train_s", 0) for s in stages) / runs,
        "peak_gpu_gib": max(gpu) if gpu else None,
        "peak_rss_gib": max(s["peak_rss_gib"] for s in stages),
        "tokens_trained": sum(resources[s].get("tokens", 0) for s in chain(name, p)) / runs,
        "tokens_generated": generated / runs,
    }


def base_tokenizer():
    """The base model's tokenizer (the `tokenizers` library alone: no model code to import)."""
    from tokenizers import Tokenizer

    path = paths.BASE / "tokenizer.json"
    if not path.exists():
        raise UserError(f"{path} is missing; run `dvc repro` so every stage before the report has run")
    return Tokenizer.from_file(str(path))


def generated_tokens(name: str, p: config.Params, tokenizer) -> int:
    """Tokens of a model's answers over all its runs. evaluate does not record the count, so the saved
    answers are re-tokenized (cheap next to the bootstrap); the stop token that ended each is not counted."""
    answers = [r["prediction"] for run in p.runs(name) for r in read_jsonl(paths.predictions_file(name, run))]
    return sum(len(e.ids) for e in tokenizer.encode_batch(answers, add_special_tokens=False))


# ---------------------------------------------------------------- ranking


def ranking(p: config.Params, numbers: dict, costs: dict[str, dict]) -> dict[str, list[dict]]:
    """Run key -> every evaluated model, best first by the primary metric's point estimate, each with its
    rank, quality numbers and whether it is Pareto-optimal in quality, wall time and memory."""
    _, memory = memory_axis(costs)
    out = {}
    for run in compared_runs(p):
        quality = {name: numbers[name][run_for(name, run).key] for name in models(p)}
        order = sorted(models(p), key=lambda name: -quality[name][PRIMARY]["value"])
        optimal = pareto_optimal(
            {n: (quality[n][PRIMARY]["value"], costs[n]["wall_s"], costs[n][memory]) for n in order}
        )
        out[run.key] = [
            {"model": n, "rank": i, "quality": quality[n], "pareto_optimal": n in optimal}
            for i, n in enumerate(order, start=1)
        ]
    return out


def pareto_optimal(points: dict[str, tuple[float, float, float]]) -> set[str]:
    """The models of (quality, wall s, memory) points that no other point dominates: at least as good
    in quality and at most as costly in wall time and memory, and not the same point."""

    def dominates(a: tuple, b: tuple) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2] and a != b

    return {n for n, x in points.items() if not any(dominates(y, x) for y in points.values())}


def paired(diffs: list[tuple[str, str, str, str, dict]], run_key: str, a: str, b: str, metric: str) -> dict:
    """a − b on a run, from the Differences (computed there as b − a for some pairs: then negated)."""
    for key, x, y, m, d in diffs:
        if (key, m) != (run_key, metric):
            continue
        if (x, y) == (a, b):
            return d
        if (x, y) == (b, a):
            return {"diff": -d["diff"], "lo": -d["hi"], "hi": -d["lo"], "p": d["p"]}
    raise KeyError(f"no difference {a} − {b} on {run_key} for {metric}")


def resolved(d: dict) -> bool:
    """The test set resolves a difference whose 95% interval excludes 0."""
    return d["lo"] > 0 or d["hi"] < 0


def resolution(ranked: dict[str, list[dict]], diffs: list[tuple[str, str, str, str, dict]]) -> dict:
    """Run key -> the primary-metric difference of each pair adjacent in the ranking (better − worse),
    and each compared metric's minimum detectable difference: the median half-width of the 95%
    intervals of every pair's paired difference on that run."""
    out = {}
    for run_key, entries in ranked.items():
        names = [e["model"] for e in entries]
        half_widths: dict[str, list[float]] = {}
        for key, _, _, m, d in diffs:
            if key == run_key:
                half_widths.setdefault(m, []).append((d["hi"] - d["lo"]) / 2)
        out[run_key] = {
            "adjacent": [(a, b, paired(diffs, run_key, a, b, PRIMARY)) for a, b in pairwise(names)],
            "min_detectable": {m: float(np.median(w)) for m, w in half_widths.items()},
        }
    return out


def ranking_section(p: config.Params, evals: dict, ranked: dict, costs: dict[str, dict]) -> Section:
    label, memory = memory_axis(costs)
    several_seeds = len(p.seeds) > 1
    parts: list = [
        f"Every evaluated model, best first by {LABELS[PRIMARY]} (95% paired-bootstrap intervals), beside "
        "its total cost per run: the stages that built it and its evaluation (the Resources table's; "
        f"memory: the {label.removesuffix(' GiB')} of its stages). Pareto-optimal: no other model "
        f"is at least as good in {LABELS[PRIMARY]} and at most as costly in both wall time and memory."
    ]
    for run_key, entries in ranked.items():
        metrics = carried(COMPARED, entries[0]["quality"])
        seeds_header = [f"{LABELS[PRIMARY]} over seeds"] if several_seeds else []
        rows = []
        for e in entries:
            q, c = e["quality"], costs[e["model"]]
            rows.append(
                [
                    str(e["rank"]),
                    e["model"],
                    *(f"{q[m]['value']:.2f} [{q[m]['ci_low']:.2f}, {q[m]['ci_high']:.2f}]" for m in metrics),
                    *(
                        [over_seeds(evals[e["model"]], run_key.split("/")[0], PRIMARY)]
                        if several_seeds
                        else []
                    ),
                    fmt(c["wall_s"], 1),
                    fmt(c[memory]),
                    f"{c['tokens_trained']:,.0f}",
                    f"{c['tokens_generated']:,.0f}",
                    "yes" if e["pareto_optimal"] else "",
                ]
            )
        headers = ["rank", "model", *(LABELS[m] for m in metrics), *seeds_header, "wall s per run", label]
        parts += [
            f"**{run_key}**",
            Table([*headers, "tokens trained per run", "tokens generated per run", "Pareto-optimal"], rows),
        ]
    return "Ranking: quality against cost", parts


def resolution_section(resolved_by_run: dict) -> Section:
    adjacent_rows = [
        [
            run_key,
            f"{a} − {b}",
            f"{d['diff']:+.2f}",
            f"[{d['lo']:+.2f}, {d['hi']:+.2f}]",
            f"{d['p']:.3f}",
            "resolved" if resolved(d) else "not resolved",
        ]
        for run_key, r in resolved_by_run.items()
        for a, b, d in r["adjacent"]
    ]
    detectable_rows = [
        [run_key, LABELS[m], f"{x:.2f}"]
        for run_key, r in resolved_by_run.items()
        for m, x in r["min_detectable"].items()
    ]
    return "Which differences the test set can resolve", [
        f"Each pair adjacent in the ranking, better − worse in {LABELS[PRIMARY]} (the paired bootstrap of "
        "the Differences section): resolved if its 95% interval excludes 0, else the test set cannot "
        "order the two.",
        Table(["run", "pair", "difference", "95% interval", "p", "test set"], adjacent_rows),
        "Minimum detectable difference: the median half-width of the 95% intervals of every pair's paired "
        "difference on the run; a difference well below it usually has an interval that holds 0.",
        Table(["run", "metric", "minimum detectable difference"], detectable_rows),
    ]


# ---------------------------------------------------------------- plots


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def memory_axis(costs: dict[str, dict]) -> tuple[str, str]:
    """(label, cost key) of the memory axis: the GPU peak where every model has one, else peak RSS."""
    if all(c["peak_gpu_gib"] is not None for c in costs.values()):
        return "peak GPU GiB", "peak_gpu_gib"
    return "peak RSS GiB", "peak_rss_gib"


def pareto_points(evals: dict, costs: dict[str, dict]) -> list[dict]:
    """One point per evaluated model for the quality-against-cost plots (report.html and `dvc plots`)."""
    label, key = memory_axis(costs)
    return [
        {
            "model": name,
            **{m: evals[name][m] for m in HEADLINE},
            "peak_memory_gib": c[key],
            "memory": label.removesuffix(" GiB"),
            "wall_s": c["wall_s"],
        }
        for name, c in costs.items()
    ]


def pareto_figures(p: config.Params, evals: dict, points: list[dict]) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_x = {f"{points[0]['memory']} GiB": "peak_memory_gib", "wall s per run": "wall_s"}
    figures = []
    for xlabel, key in axes_x.items():
        fig, axs = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, metric in zip(axs, HEADLINE, strict=True):
            for point in points:
                ax.scatter(point[key], point[metric])
                ax.annotate(
                    point["model"], (point[key], point[metric]), textcoords="offset points", xytext=(4, 4)
                )
            ax.axhline(evals["base"][metric], color="grey", linestyle="--", linewidth=1, label="base")
            ax.set(xlabel=xlabel, ylabel=LABELS[metric])
            ax.legend(loc="best")
        figures.append(Figure(f"Quality vs {xlabel} (up and left is better)", _png(fig)))
        plt.close(fig)
    return figures


def loss_figure(p: config.Params) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name in p.methods:
        for path in sorted((paths.CURVES / name).glob("*.csv")):
            data = np.genfromtxt(path, delimiter=",", names=True, ndmin=1)
            ax.plot(data["step"], data["loss"], marker=".", label=f"train-{name} {path.stem}")
    ax.set(xlabel="optimizer step", ylabel="training loss (answer tokens)")
    ax.legend(fontsize=8)
    png = _png(fig)
    plt.close(fig)
    return Figure("Training loss per stage", png)


# ---------------------------------------------------------------- data and provenance


def data_section() -> Section:
    summary = _read(paths.DATA_SUMMARY)
    rows = [
        [
            name,
            d["format"],
            f"{d['rows_read']:,}",
            str(d["duplicates"]),
            str(d["empty"]),
            str(d["overlong_dropped"]),
            str(d["overlong_truncated"]),
            str(d["rows_with_chat_markup"]),
            " / ".join(str(d["splits"][s]) for s in ("train", "validation", "test")),
            str(d["mean_tokens"]),
        ]
        for name, d in summary.items()
    ]
    return "Data", [
        Table(
            [
                "dataset",
                "format",
                "rows read",
                "duplicates",
                "empty",
                "over-long dropped",
                "truncated",
                "chat markup as text",
                "train / val / test",
                "mean tokens",
            ],
            rows,
        )
    ]


def provenance_section(resources: dict) -> Section:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    dirty = " (with uncommitted changes)" if git("status", "--porcelain") not in ("", "unknown") else ""
    devices = sorted({r.get("device", "-") for r in resources.values()})
    # the stages' own: a report made elsewhere (a study's metrics copied from a GPU machine) says so
    ran_on = sorted({r["packages"] for r in resources.values() if "packages" in r})
    return "Provenance", [
        Table(
            ["what", "value"],
            [
                ["git commit", git("rev-parse", "HEAD") + dirty],
                ["params.yaml sha256", hashlib.sha256(config.PARAMS_FILE.read_bytes()).hexdigest()[:16]],
                ["packages, the stages'", "; ".join(ran_on) or "-"],
                ["packages, this report's", package_versions()],
                ["device", ", ".join(devices)],
            ],
        )
    ]


# ---------------------------------------------------------------- rendering


def render_md(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for name, parts in sections:
        out += [f"## {name}", ""]
        for part in parts:
            if isinstance(part, Table):
                out += ["| " + " | ".join(part.headers) + " |", "|" + "---|" * len(part.headers)]
                out += ["| " + " | ".join(row) + " |" for row in part.rows]
            elif isinstance(part, Figure):
                out.append(f"*Figure: {part.caption} (in report.html)*")
            else:
                out.append(part)
            out.append("")
    return "\n".join(out)


def render_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for name, parts in sections:
        body.append(f"<h2>{e(name)}</h2>")
        for part in parts:
            if isinstance(part, Table):
                head = "".join(f"<th>{e(h)}</th>" for h in part.headers)
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in part.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(part, Figure):
                data = base64.b64encode(part.png).decode()
                body.append(
                    f'<figure><img alt="{e(part.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(part.caption)}</figcaption></figure>"
                )
            else:
                body.append(f"<p>{e(part).replace('**', '')}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


@dataclass
class Results:
    """Every number the report shows, computed once for report.md/.html and report.json alike."""

    evals: dict
    resources: dict
    indices: dict
    quality: dict
    differences: list
    expectations: list
    costs: dict
    ranking: dict
    resolution: dict
    points: list


def compute(p: config.Params) -> Results:
    evals = {name: _read(paths.EVAL / f"{name}.json") for name in models(p)}
    resources = {s: _read(paths.RESOURCES / f"{s}.json") for name in models(p) for s in cost_stages(name, p)}
    tokenizer = base_tokenizer()
    costs = {name: cost(name, p, resources, generated_tokens(name, p, tokenizer)) for name in models(p)}
    scores, indices = {}, {}
    for name in models(p):
        for run in p.runs(name):
            scores[name, run.key] = per_example(name, run)
            n = len(scores[name, run.key]["rougeL"])
            indices.setdefault(run.dataset, stats.resample_indices(n, p.report.resamples, p.seed))
    # the bootstrap is the report's long phase: p.report.resamples draws per interval
    with bar("report: bootstrap", interval_count(p, scores), unit=" intervals") as intervals:
        numbers = quality(p, evals, scores, indices, intervals.update)
        diffs = differences(p, scores, indices, intervals.update)
        verdicts = expectations(p, scores, indices, intervals.update)
    ranked = ranking(p, numbers, costs)
    return Results(
        evals,
        resources,
        indices,
        numbers,
        diffs,
        verdicts,
        costs,
        ranked,
        resolution(ranked, diffs),
        pareto_points(evals, costs),
    )


def build(p: config.Params, r: Results) -> list[Section]:
    conventions = (
        f"{r.evals['base']['convention']} Primary convention: sacrebleu / rouge-score. Intervals: "
        f"paired bootstrap, {p.report.resamples} resamples, seed {p.seed}."
    )
    deviations = [f"Deviation, {name}: {d}." for name, m in p.methods.items() for d in m.deviations()]
    return [
        ("Conventions", [conventions, *deviations, *scored_forms(r.evals)]),
        quality_section(p, r.evals, r.quality, r.indices),
        differences_section(r.differences),
        expectation_section(p, r.expectations),
        ranking_section(p, r.evals, r.ranking, r.costs),
        resolution_section(r.resolution),
        resources_section(p, r.resources, r.costs),
        ("Plots", [*pareto_figures(p, r.evals, r.points), loss_figure(p)]),
        data_section(),
        provenance_section(r.resources),
    ]


def scored_forms(evals: dict) -> list[str]:
    """Conventions lines: the form each adapter was scored in (evaluate.scored_form), as its metrics/eval
    file records it, with the merged copy's largest test-loss difference from NF4 + adapter."""
    lines = []
    for name, e in evals.items():
        if "scored_form" not in e:  # the base and whole trained models: scored as saved
            continue
        checks = [run["continuity"] for run in e["runs"].values() if "continuity" in run]
        line = f"Scored form, {name}: {e['scored_form']}"
        if checks:
            worst = max(c["relative_difference"] for c in checks)
            line += (
                f" (the adapter merged into the dequantized NF4 weights; its test loss on the first "
                f"{checks[0]['rows']} test rows is within {worst:.3%} of NF4 + adapter's, tolerance "
                f"{checks[0]['tolerance']:.0%})"
            )
        elif e["scored_form"] == "nf4+adapter":
            line += " (the adapter on the NF4 base, as trained)"
        else:
            line += " (the adapter merged into the unquantized weights by peft's merge_and_unload)"
        lines.append(line + ".")
    return lines


def summary(p: config.Params, r: Results) -> dict:
    """metrics/report.json: the report's uncertainty where `dvc exp show` / `dvc metrics diff` see it.

    Keys read as columns, e.g. models.qlora.builtin/seed0.bleu4.ci_low; runs are keyed as report.md's
    quality tables are (dataset, or dataset/seed<k> for a trained model)."""
    out: dict = {"models": {}, "pairs": {}, "expectation": {}, "ranking": {}, "resolution": {}}
    for name, runs in r.quality.items():
        out["models"][name] = {
            key: {**{m: _rounded(q[m]) for m in carried(COMPARED, q)}, "test_loss": _rounded(q["test_loss"])}
            for key, q in runs.items()
        }
    for name, c in r.costs.items():
        out["models"][name]["cost"] = _rounded(c)
    for run_key, a, b, m, d in r.differences:
        pair = out["pairs"].setdefault(f"{a}-vs-{b}", {}).setdefault(run_key, {})
        pair[m] = _rounded({"diff": d["diff"], "ci_low": d["lo"], "ci_high": d["hi"], "p": d["p"]})
    for run_key, m, e in r.expectations:
        margin = {"margin": e["margin"], "ci_low": e["lo"], "ci_high": e["hi"], "verdict": e["verdict"]}
        out["expectation"].setdefault(run_key, {})[m] = _rounded(margin)
    for run_key, entries in r.ranking.items():
        out["ranking"][run_key] = {
            e["model"]: {"rank": e["rank"], "pareto_optimal": e["pareto_optimal"]} for e in entries
        }
    for run_key, res in r.resolution.items():
        adjacent = {
            f"{a}-vs-{b}": {"diff": d["diff"], "ci_low": d["lo"], "ci_high": d["hi"], "resolved": resolved(d)}
            for a, b, d in res["adjacent"]
        }
        out["resolution"][run_key] = _rounded({"adjacent": adjacent, "min_detectable": res["min_detectable"]})
    return out


def _rounded(x):
    """4 decimals keep `dvc exp show` columns narrow; None (no GPU) and strings stay as they are."""
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return round(x, 4) if isinstance(x, float) else x


def run(p: config.Params) -> str:
    results = compute(p)
    sections = build(p, results)
    title = f"ftbench report: {p.model.source} on {', '.join(p.data.datasets)}"
    text = render_md(title, sections)
    with atomic_path(paths.REPORT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(paths.REPORT_HTML) as tmp:
        tmp.write_text(render_html(title, sections), encoding="utf-8")
    write_json(paths.REPORT_JSON, summary(p, results))
    write_json(paths.PARETO, results.points)
    return text


def main(argv: list[str]) -> None:
    p, _ = commands.parse("report", argv)
    # the report reads metrics/resources, so its own record goes to MLflow only
    with tracking.stage("report", p, record_file=False) as st:
        print(run(p))
        st.artifacts += [paths.REPORT, paths.REPORT_HTML, paths.REPORT_JSON, paths.PARETO]
