"""A grid through DVC's own queue (docs/several-gpus.md): experiments queued with `dvc exp run --queue`,
run side by side by `dvc queue start -j 2`, their GPU stages sharing out the GPUs (fake ids on the CPU)."""

import json
import os
import sys
import time

import pytest

from ftbench.common import gpus

from .conftest import ROOT, write_params
from .test_pipeline import dvc_repo, sh


def finished(repo) -> bool:
    status = sh(repo, "dvc", "queue", "status")
    return not any(word in status for word in ("Queued", "Running"))


@pytest.mark.slow
def test_a_grid_of_seeds_through_the_queue_shares_the_gpus_and_reports_as_one_study(
    tmp_path, tiny_model_dir, monkeypatch
):
    """Two experiments (seeds 1 and 2), two queue workers, one (fake) GPU: their GPU stages take turns on
    it; tools/grid_report.py then reports over both seeds."""
    monkeypatch.setenv(gpus.DEVICES_ENV, "7")
    monkeypatch.setenv(gpus.LOCKS_ENV, str(tmp_path / "locks"))
    repo = dvc_repo(tmp_path, tiny_model_dir)
    methods = write_params(repo, tiny_model_dir)["methods"]
    write_params(repo, tiny_model_dir, methods={"qlora": methods["qlora"]}, ensembles={}, merge={})
    sh(repo, "git", "commit", "-qam", "qlora alone")
    for seed in (1, 2):
        sh(repo, "dvc", "exp", "run", "--queue", "-n", f"seed{seed}", "-S", f"seeds=[{seed}]")
    sh(repo, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    while not finished(repo):
        assert time.monotonic() < deadline, sh(repo, "dvc", "queue", "status")
        time.sleep(3)
    status = sh(repo, "dvc", "queue", "status")
    assert status.count("Success") == 2, status
    refs = sh(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
    records = [
        json.loads(sh(repo, "git", "show", f"{ref}:metrics/resources/{stage}.json"))
        for ref in refs
        for stage in ("train-qlora", "evaluate-qlora")
    ]
    assert len(records) == 4 and {r["gpus"] for r in records} == {"7"}
    ordered = sorted(records, key=lambda r: r["started_at"])
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert before["finished_at"] <= after["started_at"]  # one GPU: never two stages at once
    assert os.listdir(tmp_path / "locks") == ["gpu7.lock"]

    sh(repo, sys.executable, ROOT / "tools/grid_report.py", "grid", "seed1", "seed2")
    report = json.loads((repo / "grid/metrics/report.json").read_text())
    assert {"builtin/seed1", "builtin/seed2"} <= set(report["models"]["qlora"])  # one study, both seeds
