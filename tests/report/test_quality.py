"""ftbench.report.quality: estimates and intervals recomputed from the predictions, exact match
only where a dataset has final answers."""

import json

import pytest

from ftbench.common import config, paths
from ftbench.stages import report

from ..conftest import write_params
from .fabricate import fabricate_stage_outputs, recomputed


def test_quality_numbers_recompute_from_predictions(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    evals = json.loads((paths.EVAL / "hybrid.json").read_text())["runs"]["builtin/seed0"]
    row = next(line for line in text.splitlines() if line.startswith("| hybrid | ") and "[" in line)
    value, lo, hi = recomputed(p, "hybrid", "rougeL")
    assert row.split(" | ")[1].startswith(f"{evals['bleu4']:.2f} [")
    assert row.split(" | ")[2] == f"{value:.2f} [{lo:.2f}, {hi:.2f}]" and lo < value < hi


def test_report_carries_exact_match_where_references_have_final_answers(project, tiny_model_dir):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p, final_answers={"builtin"})
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    value, lo, hi = recomputed(p, "hybrid", "exact_match")
    assert lo < value < hi  # the fabricated hybrid gets about 5 in 6 right: an interval, not a point
    got = out["models"]["hybrid"]["builtin/seed0"]["exact_match"]
    assert got == {"value": round(value, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}
    header = "| model | BLEU-4 | ROUGE-L | ROUGE-1 | ROUGE-2 | Exact match | test loss | perplexity |"
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith("| hybrid | ") and "[" in line)
    assert row.split(" | ")[5] == f"{value:.2f} [{lo:.2f}, {hi:.2f}]"
    # the difference: the same paired bootstrap as ROUGE-L's, on the same resampled examples
    d = out["pairs"]["hybrid-vs-qlora"]["builtin/seed0"]["exact_match"]
    assert d["diff"] == pytest.approx(value - recomputed(p, "qlora", "exact_match")[0], abs=1e-4)
    assert d["ci_low"] <= d["diff"] <= d["ci_high"] and 0 <= d["p"] <= 1
    row = f"| builtin/seed0 | hybrid − qlora | Exact match | {d['diff']:+.2f} | "
    assert row + f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | {d['p']:.3f} |" in text
    assert set(out["expectation"]["builtin/seed0"]) == {"bleu4", "rougeL", "exact_match"}
    assert "| dataset | model | BLEU-4 | ROUGE-L | Exact match |" in text  # across training seeds
    assert "<th>Exact match</th>" in paths.REPORT_HTML.read_text()


def test_exact_match_is_only_where_a_dataset_has_final_answers(project, tiny_model_dir):
    (project / "gsm.jsonl").write_text("")  # the report reads the evaluate stage's files only
    datasets = {"builtin": {"source": "builtin"}, "gsm": {"source": str(project / "gsm.jsonl")}}
    write_params(project, tiny_model_dir, seeds=[0, 1], **{"data.datasets": datasets})
    p = config.load()
    fabricate_stage_outputs(p, final_answers={"gsm"})
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    assert (
        "exact_match" in out["models"]["qlora"]["gsm/seed1"] and "exact_match" in out["models"]["base"]["gsm"]
    )
    assert "exact_match" not in out["models"]["qlora"]["builtin/seed1"]
    assert "exact_match" not in out["models"]["base"]["builtin"]
    assert "exact_match" in out["pairs"]["qlora-vs-base"]["gsm/seed0"]
    assert "exact_match" not in out["pairs"]["qlora-vs-base"]["builtin/seed0"]
    quality = text.split("## Differences")[0]
    builtin_table = quality.split("**builtin/seed0**")[1].split("**gsm/seed0**")[0]
    assert "Exact match" not in builtin_table
    assert "| Exact match |" in quality.split("**gsm/seed0**")[1].split("**gsm/seed1**")[0]
    # across seeds: one table for both datasets, exact match left empty where there is none
    seeds = quality.split("**Across training seeds**")[1]
    assert next(line for line in seeds.splitlines() if line.startswith("| builtin | hybrid |")).endswith(
        " - |"
    )
    assert (
        " ± "
        in next(line for line in seeds.splitlines() if line.startswith("| gsm | hybrid |")).split("|")[-2]
    )
