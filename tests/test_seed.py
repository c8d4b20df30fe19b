"""`make seed`, the study the project was specified with, runs: its command line, through `dvc exp run`,
on local copies of what it names (a tiny model folder for Gemma-3-1b-it, GSM8K's rows for the hub's)."""

import json
import shutil
import subprocess

import pytest

from .conftest import ROOT, SHARED_DATA
from .test_pipeline import dvc_repo, sh

GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"  # the rows of the hub's openai/gsm8k, train split


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/data/gsm8k (a copy of the hub's rows)")
def test_make_seed_prepares_the_seeds_splits_as_a_dvc_experiment(tmp_path, tiny_model_dir):
    repo = dvc_repo(tmp_path, tiny_model_dir)
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    rows = shutil.copy(GSM8K, tmp_path / "gsm8k.jsonl")
    make = [
        "make", "-o", "install", "seed", f"VENV={ROOT / '.venv'}",
        f"SEED_MODEL={tiny_model_dir}", f"SEED_DATA={rows}", "SEED_TARGETS=data",
    ]  # fmt: skip
    run = subprocess.run(make, cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((repo / "metrics/data.json").read_text())
    assert list(summary) == ["gsm8k"]
    assert summary["gsm8k"]["splits"] == {"test": 2000, "validation": 200, "train": 5000}
    assert summary["gsm8k"]["format"] == "alpaca"  # question/answer mapped to instruction/output
    assert "seed" in sh(repo, "dvc", "exp", "list", "--name-only")
