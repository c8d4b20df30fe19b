"""metrics/report.json: the report's uncertainty where `dvc exp show` / `dvc metrics diff` see it."""

from __future__ import annotations

from ftbench.report.ranking import resolved
from ftbench.report.results import Results
from ftbench.report.study import COMPARED, carried


def summary(r: Results) -> dict:
    """Keys read as columns, e.g. models.qlora.builtin/seed0.bleu4.ci_low; runs are keyed as report.md's
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
