"""Quality with its uncertainty: each model's point estimates and 95% paired-bootstrap intervals, every
pair's differences with p-values, and the seed's expectation (is the hybrid at least its qlora stage plus
a share of what galore gains over it?)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ftbench.common import config
from ftbench.evaluation import stats
from ftbench.report.study import COMPARED, LABELS, carried, compared_runs, models, pairs, roles, run_for

Tick = Callable[[int], object]  # a progress bar's update: n more intervals drawn


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
