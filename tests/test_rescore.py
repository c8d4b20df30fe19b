"""tools/rescore.py: a finished study's saved answers, cut at a stop text and scored again."""

import json
import subprocess
import sys

import pytest

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl, write_jsonl

from .conftest import ROOT
from .report.fabricate import fabricate_stage_outputs

SCRIPT = ROOT / "tools" / "rescore.py"


def test_answers_that_end_in_end_of_turn_text_are_cut_and_scored_again(project):
    p = config.load()
    fabricate_stage_outputs(p, final_answers=set(p.data.datasets))
    run = p.runs("qlora")[0]
    rows = read_jsonl(paths.predictions_file("qlora", run))
    right = [r["prediction"] == r["reference"] for r in rows]
    assert any(right) and not all(right)
    for r in rows:  # as the H200 wrote them: the stop token decoded as text, so no final answer matched
        r["prediction"] += "<end_of_turn>"
        r["exact_match"] = 0.0
    write_jsonl(paths.predictions_file("qlora", run), rows)
    written = json.loads((paths.EVAL / "qlora.json").read_text())
    written["exact_match"] = written["runs"][run.key]["exact_match"] = 0.0
    (paths.EVAL / "qlora.json").write_text(json.dumps(written))

    subprocess.run([sys.executable, SCRIPT, str(project)], check=True, capture_output=True)

    fixed = read_jsonl(paths.predictions_file("qlora", run))
    assert not any("<end_of_turn>" in r["prediction"] for r in fixed)
    assert [r["exact_match"] == 100.0 for r in fixed] == right
    summary = json.loads((paths.EVAL / "qlora.json").read_text())
    assert summary["runs"][run.key]["exact_match"] == pytest.approx(100 * sum(right) / len(right))
    assert summary["exact_match"] == pytest.approx(
        sum(r["exact_match"] for r in summary["runs"].values()) / len(summary["runs"]), abs=1e-4
    )
