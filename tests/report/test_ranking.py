"""ftbench.report.ranking: the order, the Pareto front and which adjacent ranks the test set
resolves."""

import json
from itertools import pairwise

import numpy as np
import pytest

from ftbench.common import config, paths
from ftbench.common.atomic import write_json
from ftbench.report import ranking, ranking_sections, study
from ftbench.stages import report

from .fabricate import answer_tokens, expected_cost, fabricate_stage_outputs


def dominated(point: tuple, others: list[tuple]) -> bool:
    """(quality, wall s, memory): another point is at least as good and at most as costly, not the same."""
    return any(q >= point[0] and w <= point[1] and m <= point[2] and (q, w, m) != point for q, w, m in others)


@pytest.mark.parametrize(
    ("base_gpu_gib", "base_optimal"),
    [(100.0, False), (0.5, True)],
    ids=["base-dominated", "base-kept-by-its-memory"],
)
def test_ranking_orders_every_model_by_bleu_and_flags_the_pareto_front(project, base_gpu_gib, base_optimal):
    p = config.load()
    fabricate_stage_outputs(p)
    # the base model's evaluation made the slowest stage: the least good and the slowest model, so only
    # the least memory keeps it on the front
    write_json(
        paths.RESOURCES / "evaluate-base.json",
        {
            "stage": "evaluate-base",
            "wall_s": 1000,
            "peak_gpu_gib": base_gpu_gib,
            "peak_rss_gib": 1.0,
            "device": "cpu",
        },
    )
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    models = out["models"]
    bleu = {name: models[name][study.run_for(name, config.Run("builtin", 0)).key]["bleu4"] for name in models}
    ranked = out["ranking"]["builtin/seed0"]
    assert set(ranked) == set(study.models(p))
    by_rank = sorted(ranked, key=lambda name: ranked[name]["rank"])
    assert by_rank == sorted(bleu, key=lambda name: -bleu[name]["value"])
    table = text.split("## Ranking: quality against cost")[1].split("## ")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "[" in line]
    assert [row[1] for row in rows] == by_rank
    assert (
        rows[0][2] == f"{bleu[by_rank[0]]['value']:.2f} [{bleu[by_rank[0]]['ci_low']:.2f}, "
        f"{bleu[by_rank[0]]['ci_high']:.2f}]"
    )
    points = {
        n: (bleu[n]["value"], models[n]["cost"]["wall_s"], models[n]["cost"]["peak_gpu_gib"]) for n in models
    }
    for name in models:
        expected = not dominated(points[name], [x for n, x in points.items() if n != name])
        assert ranked[name]["pareto_optimal"] == expected
        assert (rows[by_rank.index(name)][-1].rstrip(" |") == "yes") == expected
    assert ranked["base"]["pareto_optimal"] == base_optimal and ranked[by_rank[0]]["pareto_optimal"]


def test_pareto_optimal_drops_a_dominated_model_only():
    points = {
        "cheap": (40.0, 10.0, 3.0),
        "better": (50.0, 20.0, 5.0),
        "dominated": (40.0, 12.0, 3.0),
        "twin": (50.0, 20.0, 5.0),
        "leaner": (30.0, 30.0, 1.0),
    }
    expected = {n for n, x in points.items() if not dominated(x, [y for m, y in points.items() if m != n])}
    assert ranking.pareto_optimal(points) == expected == {"cheap", "better", "twin", "leaner"}


def test_resolution_says_resolved_only_when_the_interval_excludes_zero():
    run = "builtin/seed0"
    diffs = [  # (run, a, b, metric, a - b): the Differences' pairs, some the other way round
        (run, "hybrid", "qlora", "bleu4", {"diff": 6.0, "lo": 2.0, "hi": 10.0, "p": 0.004}),
        (run, "qlora", "base", "bleu4", {"diff": 1.0, "lo": -3.0, "hi": 5.0, "p": 0.6}),
        (run, "hybrid", "base", "bleu4", {"diff": 7.0, "lo": 1.0, "hi": 13.0, "p": 0.01}),
        (run, "qlora", "base", "rougeL", {"diff": -4.0, "lo": -7.0, "hi": -1.0, "p": 0.02}),
    ]
    ranked = {run: [{"model": m} for m in ("hybrid", "qlora", "base")]}
    got = ranking.resolution(ranked, diffs)[run]
    assert [(a, b, ranking.resolved(d)) for a, b, d in got["adjacent"]] == [
        ("hybrid", "qlora", True),
        ("qlora", "base", False),
    ]
    assert ranking.resolved({"lo": -7.0, "hi": -1.0})  # an interval wholly below 0 resolves too
    widths = [(d["hi"] - d["lo"]) / 2 for _, _, _, m, d in diffs if m == "bleu4"]
    assert got["min_detectable"] == {"bleu4": float(np.median(widths)), "rougeL": 3.0}
    # a pair the Differences hold the other way round comes back negated
    base_first = ranking.resolution({run: [{"model": "base"}, {"model": "qlora"}]}, diffs)[run]["adjacent"]
    assert base_first == [("base", "qlora", {"diff": -1.0, "lo": -5.0, "hi": 3.0, "p": 0.6})]
    _, parts = ranking_sections.resolution_section(ranking.resolution(ranked, diffs))
    rows = parts[1].rows
    assert rows[0][1:] == ["hybrid − qlora", "+6.00", "[+2.00, +10.00]", "0.004", "resolved"]
    assert rows[1][1:] == ["qlora − base", "+1.00", "[-3.00, +5.00]", "0.600", "not resolved"]


def test_report_ranks_and_resolves_every_model_in_json_md_and_pareto_data(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    res = out["resolution"]["builtin/seed0"]
    ranked = out["ranking"]["builtin/seed0"]
    by_rank = sorted(ranked, key=lambda name: ranked[name]["rank"])
    assert list(res["adjacent"]) == [f"{a}-vs-{b}" for a, b in pairwise(by_rank)]
    section = text.split("## Which differences the test set can resolve")[1].split("## ")[0]
    for pair, d in res["adjacent"].items():
        assert d["resolved"] == (d["ci_low"] > 0 or d["ci_high"] < 0)
        a, b = pair.split("-vs-")
        row = next(line for line in section.splitlines() if line.startswith(f"| builtin/seed0 | {a} − {b} |"))
        assert row.endswith(" | resolved |" if d["resolved"] else " | not resolved |")
    halves = [
        (d["bleu4"]["ci_high"] - d["bleu4"]["ci_low"]) / 2
        for d in (pair["builtin/seed0"] for pair in out["pairs"].values())
    ]
    assert res["min_detectable"]["bleu4"] == pytest.approx(float(np.median(halves)), abs=2e-4)
    assert f"| builtin/seed0 | BLEU-4 | {res['min_detectable']['bleu4']:.2f} |" in section
    points = {pt["model"]: pt for pt in json.loads(paths.PARETO.read_text())}
    assert set(points) == set(study.models(p))
    for name, pt in points.items():
        assert pt["wall_s"] == expected_cost(name, p)["wall_s"]
        assert pt["bleu4"] == json.loads((paths.EVAL / f"{name}.json").read_text())["bleu4"]
    assert out["models"]["base"]["cost"]["tokens_generated"] == answer_tokens(p, "base") > 0  # one run
