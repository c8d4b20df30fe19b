"""The real pipeline under real DVC, in a temporary git repository, on the tiny model."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .conftest import ROOT, write_params

# The question's three methods and their ensemble: every kind of stage (training from the base and from a
# merged model, merge, evaluate, ensemble, report). Every method's stages run in tests/test_dvc_deps.py.
METHODS = ["qlora", "galore", "hybrid"]
STAGES = ["model", "data", "merge@qlora", "evaluate-base", "evaluate-ensemble@ensemble", "report"] + [
    f"{stage}@{m}" for stage in ("train", "evaluate") for m in METHODS
]
# each stage's MLflow run and resource record: evaluate-ensemble@<name> records as evaluate-<name>
RECORDS = sorted(s.replace("@", "-").replace("evaluate-ensemble-", "evaluate-") for s in STAGES)


def docs_exp_show_command() -> list[str]:
    """The `dvc exp show` line docs/metrics.md gives for comparing intervals across experiments."""
    line = next(
        x
        for x in (ROOT / "docs/metrics.md").read_text().splitlines()
        if x.startswith("dvc exp show") and "(bleu4|rougeL)" in x
    )
    return shlex.split(line.split("  #")[0])


def sh(cwd: Path, *cmd: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("FTBENCH_MLFLOW", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def dvc_repo(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A git and DVC repository of the project's pipeline and code, with params for the tiny model."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    methods = write_params(repo, tiny_model_dir)["methods"]
    write_params(repo, tiny_model_dir, methods={m: methods[m] for m in METHODS})
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "t@t")
    sh(repo, "git", "config", "user.name", "t")
    sh(repo, "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc/config", repo / ".dvc/config")  # the project's cache links
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")
    return repo


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_nothing_then_an_experiment(tmp_path, tiny_model_dir):
    repo = dvc_repo(tmp_path, tiny_model_dir)
    out = sh(repo, "dvc", "repro")
    assert all(f"Running stage '{s}'" in out for s in STAGES)
    for name in ["base", *METHODS, "ensemble"]:
        scores = json.loads((repo / "metrics/eval" / f"{name}.json").read_text())
        assert {"bleu4", "rouge1", "rouge2", "rougeL"} <= set(scores)
        run = "builtin" if name == "base" else "builtin-seed0"
        assert (repo / "metrics/predictions" / name / f"{run}.jsonl").exists()
    for stage in (
        "model",
        "data",
        "train-qlora",
        "merge-qlora",
        "train-hybrid",
        "evaluate-hybrid",
        "evaluate-ensemble",
    ):
        assert json.loads((repo / "metrics/resources" / f"{stage}.json").read_text())["wall_s"] > 0
    assert (repo / "models/merged/qlora/builtin/seed0/model.safetensors").exists()
    # .dvc/config's cache.type: the model is a link to DVC's cache, not a second copy
    weights = repo / "models/base/model.safetensors"
    assert weights.stat().st_nlink == 2 or weights.is_symlink()
    assert "| hybrid |" in (repo / "metrics/report.md").read_text()
    assert (
        "| ensemble | train-qlora + train-galore + evaluate-ensemble |"
        in (repo / "metrics/report.md").read_text()
    )
    assert "<img" in (repo / "metrics/report.html").read_text()

    client = MlflowClient(f"sqlite:///{repo.resolve()}/mlflow.db")  # the default store
    runs = client.search_runs([client.get_experiment_by_name("ftbench").experiment_id])
    # one parent run for the `dvc repro`, every stage nested under it, all carrying the git commit
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stage_runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "workspace"
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in stage_runs)
    assert sorted(r.data.tags["stage"] for r in stage_runs) == RECORDS
    head = sh(repo, "git", "rev-parse", "HEAD").strip()
    assert all(r.data.tags["mlflow.source.git.commit"] == head for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)

    assert "Running stage" not in sh(repo, "dvc", "repro")
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))[""]["data"]
    assert set(shown) == {"metrics/report.json"}  # the one metric: the stages' records are no metrics
    report = json.loads((repo / "metrics/report.json").read_text())
    hybrid = report["models"]["hybrid"]
    scores = json.loads((repo / "metrics/eval/hybrid.json").read_text())
    assert hybrid["builtin/seed0"]["bleu4"]["value"] == pytest.approx(
        scores["runs"]["builtin/seed0"]["bleu4"],
        abs=5e-5,  # report.json keeps 4 decimals
    )
    assert (
        shown["metrics/report.json"]["data"]["models"]["hybrid"]["builtin/seed0"] == hybrid["builtin/seed0"]
    )
    assert {"value", "ci_low", "ci_high"} <= set(hybrid["builtin/seed0"]["bleu4"])
    assert hybrid["cost"]["peak_gpu_gib"] is None and hybrid["cost"]["peak_rss_gib"] > 0  # a CPU run

    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    # shorter answers: every evaluation stage and the report run again, the training stages do not
    sh(repo, "dvc", "exp", "run", "-n", "short", "-S", "evaluate.max_new_tokens=6")
    # a params change's diff holds quality and cost, and nothing of when or how fast the stages ran
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json"))
    assert set(diff) == {"metrics/report.json"}
    changed = list(diff["metrics/report.json"])
    assert any(key.endswith(".bleu4.value") for key in changed) and any(".cost." in key for key in changed)
    volatile = ("started_at", "finished_at", "startup_s", "cpu_s", "phases_s", "energy_j", "device")
    assert not [key for key in changed if any(v in key for v in volatile)]
    exps = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    entries = [
        e for rev in exps for e in [rev, *[x for r in rev.get("experiments") or [] for x in r["revs"]]]
    ]
    runs = [e["data"] for e in entries if e.get("data")]
    # the workspace (holding the applied experiment), the baseline commit, and the experiment
    assert sorted(r["params"]["params.yaml"]["data"]["evaluate"]["max_new_tokens"] for r in runs) == [6, 6, 8]
    assert all(set(r["metrics"]) == {"metrics/report.json"} for r in runs)
    for r in runs:
        bleu = r["metrics"]["metrics/report.json"]["data"]["models"]["hybrid"]["builtin/seed0"]["bleu4"]
        assert bleu["ci_low"] <= bleu["value"] <= bleu["ci_high"]

    table = sh(repo, *docs_exp_show_command(), "--no-pager", "--md")  # docs/metrics.md's command
    header, _, *rows = table.strip().splitlines()
    assert "models.qlora.builtin/seed0.bleu4.ci_low" in header and "ci_high" in header
    branch = sh(repo, "git", "rev-parse", "--abbrev-ref", "HEAD").strip()
    assert any("short" in row for row in rows) and any(branch in row for row in rows)

    plots = json.loads(
        sh(repo, "dvc", "plots", "diff", "--json", "--targets", "Quality vs wall time", "--", branch, "short")
    )
    points = plots["data"]["Quality vs wall time"][0]["content"]["data"]["values"]
    assert {(v["rev"], v["model"]) for v in points} == {
        (rev, m) for rev in (branch, "short") for m in ["base", *METHODS, "ensemble"]
    }
