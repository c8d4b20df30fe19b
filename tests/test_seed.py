"""`make seed`, the study the project was specified with, runs: its command line, through `dvc exp run`,
on local copies of what it names (a tiny model folder for Gemma-3-1b-it, GSM8K's rows for the hub's)."""

import json
import shutil
import subprocess

from .conftest import ROOT, SHARED_DATA
from .test_pipeline import dvc_repo, sh

GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"  # the rows of the hub's openai/gsm8k, train split


def gsm8k_rows(folder) -> str:
    """GSM8K's train rows where ../shared holds them; elsewhere 7,473 rows of its shape (question, a worked
    answer ending in `#### <number>`), as many as the hub's split."""
    out = folder / "gsm8k.jsonl"
    if GSM8K.exists():
        return shutil.copy(GSM8K, out)
    rows = []
    for a in range(7473):
        b = a % 7 + 2
        answer = f"He has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"
        rows.append(
            {"question": f"Tom has {a} apples and buys {b} more. How many has he now?", "answer": answer}
        )
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(out)


def test_make_seed_prepares_the_seeds_splits_as_a_dvc_experiment(tmp_path, tiny_model_dir):
    repo = dvc_repo(tmp_path, tiny_model_dir)
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    rows = gsm8k_rows(tmp_path)
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
