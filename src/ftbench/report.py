"""Report stage: metrics/report.md and a self-contained metrics/report.html (plots embedded).

Quality with paired-bootstrap intervals, pairwise differences with p-values, the seed's expectation,
resources per stage and per method (a method's cost is its whole chain: the hybrid's is the QLoRA stage
+ the merge + its GaLore stage), Pareto and loss-curve plots, the data summary and provenance.
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
from importlib import metadata
from pathlib import Path

import numpy as np

from ftbench import commands, config, paths, stats, tracking
from ftbench.atomic import atomic_path, read_jsonl, write_json
from ftbench.errors import UserError, stage_main
from ftbench.progress import bar

HEADLINE = ("bleu4", "rougeL")
EXACT_MATCH = stats.EXACT_MATCH  # only in runs on data with final `####` answers (stats.has_final_answers)
COMPARED = (*HEADLINE, EXACT_MATCH)  # metrics in the differences, the expectation and report.json
LABELS = {  # table order
    "bleu4": "BLEU-4",
    "rougeL": "ROUGE-L",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    EXACT_MATCH: "Exact match",
}
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "galore-torch",
    "sacrebleu",
    "rouge-score",
    "dvc",
)


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
    return ["base", *p.methods]


def chain(name: str, p: config.Params) -> list[str]:
    """Resource records that make up a model, earliest first (base: none)."""
    if name == "base":
        return []
    init = p.methods[name].init
    if init == "base":
        return [f"train-{name}"]
    source = init.split("/", 1)[1]
    return [*chain(source, p), f"merge-{source}", f"train-{name}"]


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
                "test_loss": e["loss"],
                "perplexity": e["perplexity"],
            }
    return out


def quality_section(p: config.Params, evals: dict, numbers: dict, indices: dict) -> Section:
    parts: list = []
    for run in p.runs(next(iter(p.methods))):
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
    rows = []
    for dataset in p.data.datasets:
        for name in models(p):
            runs = [v for k, v in evals[name]["runs"].items() if k.split("/")[0] == dataset]
            cells = [dataset, name]
            for metric in metrics:
                if metric not in runs[0]:  # exact match on a dataset without final answers
                    cells.append("-")
                    continue
                values = np.array([v[metric] for v in runs])
                cells.append(f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}")
            rows.append(cells)
    return Table(["dataset", "model", *(LABELS[m] for m in metrics)], rows)


def llamafactory_table(p: config.Params, evals: dict) -> Table:
    rows = [
        [name, key, *(fmt(v["llamafactory"][m]) for m in ("bleu4", "rouge1", "rouge2", "rougeL"))]
        for name in models(p)
        for key, v in evals[name]["runs"].items()
    ]
    return Table(["model", "run", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"], rows)


def pairs(p: config.Params) -> list[tuple[str, str]]:
    """Every later method against every earlier one (params order), then each method against base."""
    names = list(p.methods)
    return [(b, a) for i, a in enumerate(names) for b in names[i + 1 :]] + [(m, "base") for m in names]


def differences(
    p: config.Params, scores: dict, indices: dict, tick: Tick
) -> list[tuple[str, str, str, str, dict]]:
    """(run key, a, b, metric, a − b with its interval and p) for every pair and headline metric."""
    out = []
    for run in p.runs(next(iter(p.methods))):
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


def resources_section(p: config.Params, resources: dict) -> Section:
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
    method_rows = [
        [
            name,
            " + ".join(chain(name, p)) or "-",
            fmt(cost["wall_s"], 1),
            fmt(cost["peak_gpu_gib"]),
            fmt(cost["peak_rss_gib"]),
            f"{cost['tokens']:,}",
        ]
        for name in models(p)
        for cost in [method_cost(name, p, resources)]
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
        "Per model, summed over the stages that built it (peaks: the largest of its stages):",
        Table(
            ["model", "stages", "train wall s", "peak GPU GiB", "peak RSS GiB", "tokens trained"], method_rows
        ),
    ]


def method_cost(name: str, p: config.Params, resources: dict) -> dict:
    stages = [resources[s] for s in chain(name, p)]
    gpu = [s["peak_gpu_gib"] for s in stages if s["peak_gpu_gib"] is not None]
    return {
        "wall_s": sum(s["wall_s"] for s in stages),
        "peak_gpu_gib": max(gpu) if gpu else None,
        "peak_rss_gib": max((s["peak_rss_gib"] for s in stages), default=None),
        "tokens": sum(s.get("tokens", 0) for s in stages),
    }


# ---------------------------------------------------------------- plots


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def memory_axis(costs: dict[str, dict]) -> tuple[str, str]:
    """(label, cost key) of the memory axis: the GPU peak where every method has one, else peak RSS."""
    if all(c["peak_gpu_gib"] is not None for c in costs.values()):
        return "peak GPU GiB", "peak_gpu_gib"
    return "peak RSS GiB", "peak_rss_gib"


def pareto_points(p: config.Params, evals: dict, resources: dict) -> list[dict]:
    """One point per method for the quality-against-cost plots (report.html and `dvc plots`)."""
    costs = {n: method_cost(n, p, resources) for n in p.methods}
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

    axes_x = {f"{points[0]['memory']} GiB": "peak_memory_gib", "train wall s": "wall_s"}
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
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    devices = sorted({r.get("device", "-") for r in resources.values()})
    return "Provenance", [
        Table(
            ["what", "value"],
            [
                ["git commit", git("rev-parse", "HEAD") + dirty],
                ["params.yaml sha256", hashlib.sha256(config.PARAMS_FILE.read_bytes()).hexdigest()[:16]],
                ["packages", ", ".join(versions)],
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
    points: list


def compute(p: config.Params) -> Results:
    evals = {name: _read(paths.EVAL / f"{name}.json") for name in models(p)}
    resources = {s: _read(paths.RESOURCES / f"{s}.json") for name in models(p) for s in chain(name, p)}
    scores, indices = {}, {}
    for name in models(p):
        for run in p.runs(name):
            scores[name, run.key] = per_example(name, run)
            n = len(scores[name, run.key]["rougeL"])
            indices.setdefault(run.dataset, stats.resample_indices(n, p.report.resamples, p.seed))
    # the bootstrap is the report's long phase: p.report.resamples draws per interval
    with bar("report: bootstrap", interval_count(p, scores), unit=" intervals") as intervals:
        return Results(
            evals,
            resources,
            indices,
            quality(p, evals, scores, indices, intervals.update),
            differences(p, scores, indices, intervals.update),
            expectations(p, scores, indices, intervals.update),
            pareto_points(p, evals, resources),
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
        resources_section(p, r.resources),
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
    out: dict = {"models": {}, "pairs": {}, "expectation": {}}
    for name, runs in r.quality.items():
        out["models"][name] = {
            key: {**{m: _rounded(q[m]) for m in carried(COMPARED, q)}, "test_loss": _rounded(q["test_loss"])}
            for key, q in runs.items()
        }
    for name in p.methods:
        out["models"][name]["cost"] = _rounded(method_cost(name, p, r.resources))
    for run_key, a, b, m, d in r.differences:
        pair = out["pairs"].setdefault(f"{a}-vs-{b}", {}).setdefault(run_key, {})
        pair[m] = _rounded({"diff": d["diff"], "ci_low": d["lo"], "ci_high": d["hi"], "p": d["p"]})
    for run_key, m, e in r.expectations:
        margin = {"margin": e["margin"], "ci_low": e["lo"], "ci_high": e["hi"], "verdict": e["verdict"]}
        out["expectation"].setdefault(run_key, {})[m] = _rounded(margin)
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


@stage_main
def main(argv: list[str]) -> None:
    p, _ = commands.parse("report", argv)
    # the report reads metrics/resources, so its own record goes to MLflow only
    with tracking.stage("report", p, record_file=False) as st:
        print(run(p))
        st.artifacts += [paths.REPORT, paths.REPORT_HTML, paths.REPORT_JSON, paths.PARETO]


if __name__ == "__main__":
    main()
