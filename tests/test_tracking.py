import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ftbench import config, paths, tracking

from .conftest import write_params

SECRET = "hf_abcdefghijklmnopqrstuvwx"


def stage_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FTBENCH_MLFLOW"}
    return {**env, "HF_TOKEN": SECRET, **extra}


def run_stage(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_default_store_is_sqlite_at_the_project_root_also_from_a_queued_experiment(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    queued = tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12"
    assert tracking.project_root(queued) == tmp_path.resolve()


def test_params_are_flattened_and_secrets_left_out(project, tiny_model_dir):
    write_params(
        project,
        tiny_model_dir,
        **{"data.datasets": {"builtin": {"source": "builtin", "fields": {"api_key": "k"}}}},
    )
    flat = tracking.flat_params(config.load())
    assert flat["params.methods.qlora.lr"] == "0.0002" and "params.seeds" in flat
    assert not any("api_key" in k for k in flat)
    assert tracking.redact(f"token {SECRET} here") == "token *** here"


def test_stages_log_runs_to_a_sqlite_store(project, tiny_model_dir):
    env = stage_env()
    shutil.copytree(tiny_model_dir, paths.BASE)
    for args in (["ftbench.data"], ["ftbench.train", "qlora"]):
        done = run_stage(project, env, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert SECRET not in done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{project.resolve()}/mlflow.db")
    runs = {
        r.data.tags["stage"]: r
        for r in client.search_runs([client.get_experiment_by_name("ftbench").experiment_id])
    }
    assert set(runs) == {"data", "train-qlora"}
    train = runs["train-qlora"]
    assert train.info.status == "FINISHED" and train.data.tags["method"] == "qlora"
    assert (
        train.data.tags["dvc_exp"] == "workspace" and train.data.params["params.methods.qlora.epochs"] == "1"
    )
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [1, 2]
    assert train.data.metrics["resources.wall_s"] > 0 and "resources.phase.train" in train.data.metrics
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"qlora.json", "qlora"}
    logged = json.dumps([train.data.params, train.data.tags])
    assert SECRET not in logged and "HF_TOKEN" not in logged


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_stages_log_to_a_real_mlflow_server_and_go_on_when_it_is_gone(project, tiny_model_dir, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while not tracking._reachable(uri):
            assert time.time() < deadline and server.poll() is None, "mlflow server did not start"
            time.sleep(1)
        shutil.copytree(tiny_model_dir, paths.BASE)
        for args in (["ftbench.data"], ["ftbench.train", "galore"]):
            done = run_stage(project, stage_env(MLFLOW_TRACKING_URI=uri, DVC_EXP_NAME="exp-1"), *args)
            assert done.returncode == 0, done.stderr[-2000:]
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("ftbench").experiment_id])
        galore = next(r for r in runs if r.data.tags["stage"] == "train-galore")
        assert galore.data.tags["dvc_exp"] == "exp-1" and galore.data.tags["recipe"] == "galore"
        assert client.get_metric_history(galore.info.run_id, "grad_norm")
    finally:
        server.terminate()
        server.wait(timeout=30)
    (paths.RESOURCES / "data.json").unlink()
    done = run_stage(project, stage_env(MLFLOW_TRACKING_URI=uri), "ftbench.data")
    assert done.returncode == 0 and done.stderr.count("ftbench: warning: MLflow tracking server") == 1
    assert (paths.RESOURCES / "data.json").exists()  # the stage went on and wrote its numbers
