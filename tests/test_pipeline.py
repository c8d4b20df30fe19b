"""The real pipeline under real DVC, in a temporary git repository, on the tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .conftest import ROOT, write_params

METHODS = ["qlora", "galore", "qlora-3ep", "hybrid"]
STAGES = ["model", "data", "merge@qlora", "evaluate-base", "report"] + [
    f"{stage}@{m}" for stage in ("train", "evaluate") for m in METHODS
]


def sh(cwd: Path, *cmd: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("FTBENCH_MLFLOW", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_nothing_then_an_experiment(tmp_path, tiny_model_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(repo, tiny_model_dir)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "t@t")
    sh(repo, "git", "config", "user.name", "t")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")

    out = sh(repo, "dvc", "repro")
    assert all(f"Running stage '{s}'" in out for s in STAGES)
    for name in ["base", *METHODS]:
        scores = json.loads((repo / "metrics/eval" / f"{name}.json").read_text())
        assert {"bleu4", "rouge1", "rouge2", "rougeL"} <= set(scores)
        run = "builtin" if name == "base" else "builtin-seed0"
        assert (repo / "metrics/predictions" / name / f"{run}.jsonl").exists()
    for stage in ("model", "data", "train-qlora", "merge-qlora", "train-hybrid", "evaluate-hybrid"):
        assert json.loads((repo / "metrics/resources" / f"{stage}.json").read_text())["wall_s"] > 0
    assert (repo / "models/merged/qlora/builtin/seed0/model.safetensors").exists()
    assert "| hybrid |" in (repo / "metrics/report.md").read_text()
    assert "<img" in (repo / "metrics/report.html").read_text()

    client = MlflowClient(f"sqlite:///{repo.resolve()}/mlflow.db")  # the default store
    runs = client.search_runs([client.get_experiment_by_name("ftbench").experiment_id])
    assert sorted(r.data.tags["stage"] for r in runs) == sorted(s.replace("@", "-") for s in STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)

    assert "Running stage" not in sh(repo, "dvc", "repro")
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    assert metrics  # dvc sees the metrics files

    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    sh(repo, "dvc", "exp", "run", "-S", "seed=1")
    exps = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    entries = [
        e for rev in exps for e in [rev, *[x for r in rev.get("experiments") or [] for x in r["revs"]]]
    ]
    runs = [e["data"] for e in entries if e.get("data")]
    # the workspace (holding the applied experiment), the baseline commit, and the experiment
    assert sorted(r["params"]["params.yaml"]["data"]["seed"] for r in runs) == [0, 1, 1]
    assert all("bleu4" in r["metrics"]["metrics/eval/hybrid.json"]["data"] for r in runs)
