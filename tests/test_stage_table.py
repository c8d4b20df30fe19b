"""tools/stage_table.py on the committed CPU records of `make repro` (metrics/resources)."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

SCRIPT = ROOT / "tools" / "stage_table.py"
RECORDS = ROOT / "metrics" / "resources"


def stage_table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_the_table_lists_every_stage_in_pipeline_order_and_the_rest_is_overhead():
    records = [json.loads(f.read_text()) for f in RECORDS.glob("*.json")]
    walls = {r["stage"]: r["wall_s"] for r in records}
    total = sum(walls.values()) + 60
    run = stage_table(str(total), "--resources", str(RECORDS))
    assert run.returncode == 0, run.stderr
    *table, last = run.stdout.strip().splitlines()
    summary = json.loads(last)
    assert summary["stages"] == walls and summary["overhead_s"] == 60.0
    assert summary["overhead_share"] == round(60 / total, 4)
    # the overhead splits into the stages' own start-up (their records) and DVC's share
    # approx: a sum of the same floats in another order can round to the other side of a 0.05
    startup = sum(r.get("startup_s", 0) for r in records)
    assert summary["startup_s"] == pytest.approx(startup, abs=0.06)
    assert summary["dvc_s"] == pytest.approx(60 - startup, abs=0.06)
    # split at the stages' span: what lies between them, and what outside (a stopped stage, the report)
    assert summary["dvc_between_s"] + summary["outside_span_s"] == pytest.approx(summary["dvc_s"], abs=0.2)
    worked = sum(walls.values()) + startup
    assert summary["span_s"] == pytest.approx(worked + summary["dvc_between_s"], abs=0.2)
    overhead_in_span = summary["span_s"] - sum(walls.values())
    assert summary["overhead_share_in_span"] == pytest.approx(overhead_in_span / summary["span_s"], abs=1e-3)
    rows = [line.split(" | ")[0].lstrip("| ") for line in table[2:]]
    assert rows[: len(walls)] == list(summary["stages"]) and set(rows[: len(walls)]) == set(walls)
    assert rows[0] == "model" and rows[len(walls) - 1].startswith("evaluate-")
    phases = json.loads((RECORDS / "train-qlora.json").read_text())["phases_s"]
    qlora = next(line for line in table if line.startswith("| train-qlora |"))
    assert all(f"{name} {seconds}" in qlora for name, seconds in phases.items())


def test_no_records_is_a_one_line_error(tmp_path):
    run = stage_table("100", "--resources", str(tmp_path))
    assert run.returncode != 0 and run.stderr.startswith("stage_table: error: no stage records")
