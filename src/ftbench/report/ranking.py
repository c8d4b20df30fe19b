"""Quality against cost: every model ranked by the primary metric, the Pareto front in quality, wall time
and memory, the points of the quality-against-cost plots, and which adjacent ranks the test set can
tell apart."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ftbench.common import config
from ftbench.report.costs import memory_axis
from ftbench.report.study import HEADLINE, PRIMARY, compared_runs, models, run_for


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
