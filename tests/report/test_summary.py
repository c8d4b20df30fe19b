"""ftbench.report.summary: metrics/report.json's intervals, differences, verdicts and costs."""

import json

from ftbench.common import config, paths
from ftbench.report import study
from ftbench.stages import report

from ..conftest import write_params
from .fabricate import answer_tokens, expected_cost, fabricate_stage_outputs, fabricated_resources, recomputed


def test_report_json_holds_intervals_differences_verdicts_and_costs(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    value, lo, hi = recomputed(p, "hybrid", "bleu4")
    hybrid = out["models"]["hybrid"]
    assert hybrid["builtin/seed0"]["bleu4"] == {
        "value": round(value, 4),
        "ci_low": round(lo, 4),
        "ci_high": round(hi, 4),
    }
    assert hybrid["builtin/seed0"]["test_loss"] == 1.0
    assert hybrid["cost"] == {
        **expected_cost("hybrid", p),
        "peak_rss_gib": 1.0,
        "tokens_generated": answer_tokens(p, "hybrid") / len(p.runs("hybrid")),
    }
    assert set(out["models"]["base"]) == {"builtin", "cost"}  # one run per dataset; its evaluation's cost
    assert out["models"]["base"]["cost"]["wall_s"] == fabricated_resources(p)["evaluate-base"][0]  # one run
    # no `#### <answer>` in the references: no exact match in any table or key
    assert set(hybrid["builtin/seed0"]) == {"bleu4", "rougeL", "test_loss"} and "Exact match" not in text
    assert set(out["pairs"]["hybrid-vs-qlora"]["builtin/seed0"]) == {"bleu4", "rougeL"}
    assert set(out["pairs"]) == {f"{a}-vs-{b}" for a, b in study.pairs(p)}
    d = out["pairs"]["hybrid-vs-qlora"]["builtin/seed0"]["rougeL"]
    assert f"| builtin/seed0 | hybrid − qlora | ROUGE-L | {d['diff']:+.2f} | " in text
    assert d["ci_low"] > 0 and d["p"] < 0.05  # fabricated ROUGE-L: 50 against at most 45
    verdicts = out["expectation"]["builtin/seed0"]
    assert set(verdicts) == {"bleu4", "rougeL"}
    e = verdicts["rougeL"]
    assert (
        f"| builtin/seed0 | ROUGE-L | {e['margin']:+.2f} | [{e['ci_low']:+.2f}, {e['ci_high']:+.2f}] | yes |"
        in text
    )
    points = {pt["model"]: pt for pt in json.loads(paths.PARETO.read_text())}
    assert points["hybrid"]["wall_s"] == expected_cost("hybrid", p)["wall_s"]
    assert points["hybrid"]["peak_memory_gib"] == expected_cost("hybrid", p)["peak_gpu_gib"]
    assert points["hybrid"]["rougeL"] == json.loads((paths.EVAL / "hybrid.json").read_text())["rougeL"]


def test_report_json_keys_every_dataset_and_seed_run(project, tiny_model_dir):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p)
    report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    assert set(out["models"]["qlora"]) == {"builtin/seed0", "builtin/seed1", "cost"}
    assert (
        set(out["pairs"]["hybrid-vs-base"]) == set(out["expectation"]) == {"builtin/seed0", "builtin/seed1"}
    )
