"""Every number the report shows, computed once for report.md/.html, report.json and pareto.json alike."""

from __future__ import annotations

from dataclasses import dataclass

from ftbench.common import config, paths
from ftbench.common.progress import bar
from ftbench.evaluation import stats
from ftbench.report.costs import cost, cost_stages, generated_tokens
from ftbench.report.inputs import base_tokenizer, per_example, read_json
from ftbench.report.quality import differences, expectations, interval_count, quality
from ftbench.report.ranking import pareto_points, ranking, resolution
from ftbench.report.study import models


@dataclass
class Results:
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
    evals = {name: read_json(paths.EVAL / f"{name}.json") for name in models(p)}
    resources = {
        s: read_json(paths.RESOURCES / f"{s}.json") for name in models(p) for s in cost_stages(name, p)
    }
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
