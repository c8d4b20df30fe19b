import base64
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ftbench.common import config, paths, tracking
from ftbench.common.errors import UserError, redact

from .conftest import ROOT, write_params

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
        **{"data.datasets": {"builtin": {"source": "builtin", "fields": {"api_key": "k", "output": SECRET}}}},
    )
    flat = tracking.flat_params(config.load())
    assert flat["params.methods.qlora.lr"] == "0.0002" and "params.seeds" in flat
    assert not any("api_key" in k for k in flat)
    assert flat["params.data.datasets.builtin.fields.output"] == "***"  # a token-like value is redacted
    assert tracking.redact(f"token {SECRET} here") == "token *** here"


def test_stages_log_runs_to_a_sqlite_store(project, tiny_model_dir):
    env = stage_env()
    shutil.copytree(tiny_model_dir, paths.BASE)
    for args in (["ftbench", "data"], ["ftbench", "train", "qlora"]):
        done = run_stage(project, env, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert SECRET not in done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{project.resolve()}/mlflow.db")
    runs = {
        r.data.tags["stage"]: r
        for r in client.search_runs([client.get_experiment_by_name("ftbench").experiment_id])
    }
    assert set(runs) == {"data", "train-qlora"}
    # run by hand, outside DVC: no invocation to group them, so no parent run
    assert not any(
        tracking.PARENT in r.data.tags or tracking.INVOCATION in r.data.tags for r in runs.values()
    )
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


STAGE_SCRIPT = """
import sys
from ftbench.common import config, tracking
with tracking.stage(sys.argv[1], config.load()) as st:
    st.log_step(1, {"loss": 1.0})
"""
DVC_YAML = """
stages:
  one:
    cmd: python stage.py one
    always_changed: true
  two:
    cmd: python stage.py two
    deps: [metrics/resources/one.json]
    always_changed: true
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def dvc(repo: Path, env: dict, *args: str) -> None:
    done = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_each_dvc_invocation_is_one_parent_run_with_its_stages_nested(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo)
    (repo / "stage.py").write_text(STAGE_SCRIPT)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / ".gitignore").write_text("mlflow.db\nmetrics/\n")
    env = {k: v for k, v in stage_env().items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        MLFLOW_EXPERIMENT_NAME="my-study",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        PYTHONPATH=str(ROOT / "src"),
    )
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    dvc(repo, env, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")

    dvc(repo, env, "repro")
    dvc(repo, env, "exp", "run", "-n", "trial")

    client = MlflowClient(f"sqlite:///{repo.resolve()}/mlflow.db")
    assert client.get_experiment_by_name("ftbench") is None  # MLFLOW_EXPERIMENT_NAME is honoured
    runs = client.search_runs([client.get_experiment_by_name("my-study").experiment_id])
    parents = {r.info.run_id: r for r in runs if tracking.PARENT not in r.data.tags}
    assert sorted(r.info.run_name for r in parents.values()) == ["trial", "workspace"]
    for parent_id, parent in parents.items():
        children = [r for r in runs if r.data.tags.get(tracking.PARENT) == parent_id]
        assert sorted(r.data.tags["stage"] for r in children) == ["one", "two"]
        assert parent.info.status == "FINISHED" and parent.data.params["params.seed"] == "0"
        assert {r.data.tags["dvc_exp"] for r in [parent, *children]} == {parent.info.run_name}
    commit = git(repo, "rev-parse", "HEAD")
    assert {r.data.tags[tracking.GIT_COMMIT] for r in runs} == {commit}


def test_step_metrics_do_not_wait_for_a_busy_store(project, monkeypatch):
    monkeypatch.delenv("FTBENCH_MLFLOW")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = tracking.Tracker("test", config.load(), {})
    store = sqlite3.connect(project / "mlflow.db", isolation_level=None)
    store.execute("BEGIN EXCLUSIVE")  # the store is busy: a synchronous write would wait 20 s for it
    start = time.perf_counter()
    for step in (1, 2, 3):
        tracker.log_step(step, {"loss": 1.0 / step})
    assert time.perf_counter() - start < 2
    store.execute("COMMIT")
    tracker.finish({"wall_s": 1.0}, [], "FINISHED")
    client = MlflowClient(tracking.tracking_uri())
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1, 2, 3]


def test_a_step_metric_the_store_refuses_is_one_warning_and_the_run_still_closes(
    project, monkeypatch, capsys
):
    monkeypatch.delenv("FTBENCH_MLFLOW")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = tracking.Tracker("test", config.load(), {})
    tracker.log_step(1, {"bad\nname": 1.0})  # MLflow refuses it in its background writer
    tracker.finish({"wall_s": 1.0}, [], "FINISHED")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ftbench: warning")]
    assert len(warnings) == 1 and "did not store some step metrics" in warnings[0]
    assert MlflowClient(tracking.tracking_uri()).get_run(tracker.run_id).info.status == "FINISHED"


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
        for args in (["ftbench", "data"], ["ftbench", "train", "galore"]):
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
    done = run_stage(project, stage_env(MLFLOW_TRACKING_URI=uri), "ftbench", "data")
    assert done.returncode == 0 and done.stderr.count("ftbench: warning: MLflow tracking server") == 1
    assert (paths.RESOURCES / "data.json").exists()  # the stage went on and wrote its numbers


# MLflow's own server app (the Flask app `mlflow server` serves) behind a gate that answers 401 to any
# request without the right HTTP Basic login. MLflow's `--app-name basic-auth` needs Flask-WTF, which the
# lock does not install; a full `mlflow server` (uvicorn) takes 11-27 s to start here, this 3 s.
GATED_SERVER = """
import base64, os, sys
from werkzeug.serving import make_server

port, root, login = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# what `mlflow server --backend-store-uri ... --artifacts-destination ...` gives its app, before its import
os.environ.update(
    _MLFLOW_SERVER_FILE_STORE=f"sqlite:///{root}/server.db",
    _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/",
    _MLFLOW_SERVER_SERVE_ARTIFACTS="true",
    _MLFLOW_SERVER_ARTIFACT_DESTINATION=f"{root}/artifacts",
)
from mlflow.server import app

expected = "Basic " + base64.b64encode(login.encode()).decode()


def gate(environ, start_response):
    if environ.get("HTTP_AUTHORIZATION") != expected:
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="mlflow"')])
        return [b"login required"]
    return app(environ, start_response)


make_server("127.0.0.1", port, gate, threaded=True).serve_forever()
"""
ARTIFACT_STAGE = """
import sys
from collections.abc import Iterator
from pathlib import Path
from ftbench.common import config, tracking
with tracking.stage(sys.argv[1], config.load()) as st:
    st.log_step(1, {"loss": 1.0})
    Path("out.txt").write_text("x")
    st.artifacts.append(Path("out.txt"))
"""
PASSWORD = "pw-9f3kQ"


@pytest.fixture
def gated_server(tmp_path) -> Iterator[str]:
    """The URL (no login in it) of a real MLflow server that wants user alice, password PASSWORD."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    server = subprocess.Popen(
        [sys.executable, "-c", GATED_SERVER, str(port), str(tmp_path), f"alice:{PASSWORD}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    login = urllib.request.Request(
        f"{uri}/health", headers={"Authorization": basic_auth(f"alice:{PASSWORD}")}
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(login, timeout=3):
                    break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "the MLflow server did not start"
                time.sleep(0.2)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def basic_auth(login: str) -> str:
    return "Basic " + base64.b64encode(login.encode()).decode()


def test_a_server_that_asks_for_a_login_gets_it_from_the_uri_and_the_password_never_shows(
    gated_server, tmp_path, monkeypatch
):
    with pytest.raises(urllib.error.HTTPError) as refused:  # the gate is real: no login, no answer
        urllib.request.urlopen(f"{gated_server}/health", timeout=3)
    assert refused.value.code == 401
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "params.yaml", work)
    (work / "stage.py").write_text(ARTIFACT_STAGE)
    host = gated_server.removeprefix("http://")
    env = {k: v for k, v in stage_env().items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(ROOT / "src"), MLFLOW_TRACKING_URI=f"http://alice:{PASSWORD}@{host}")

    done = subprocess.run(
        [sys.executable, "stage.py", "auth"], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ftbench: warning" not in done.stderr, done.stderr[-2000:]  # tracking ran
    # MLflow prints "View run ... at: <the URI it has>": it has the URI without the login
    assert PASSWORD not in done.stdout + done.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(gated_server)
    (run,) = client.search_runs([client.get_experiment_by_name("ftbench").experiment_id])
    assert run.data.tags["stage"] == "auth" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["out.txt"]  # uploads log in too
    assert PASSWORD not in json.dumps([run.data.tags, run.data.params])

    # a wrong password: one warning, the URI shown without it, and the stage goes on
    env["MLFLOW_TRACKING_URI"] = f"http://alice:wrong-{PASSWORD}@{host}"
    done = subprocess.run(
        [sys.executable, "stage.py", "auth"], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("ftbench: warning")]
    assert len(warnings) == 1 and f"http://alice:***@{host} cannot be reached (HTTP 401" in warnings[0]
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "uri",
    [
        "htp//nohost",  # no scheme: MLflow would make a folder of it
        "127.0.0.1:5000",
        "htp://nohost",  # a scheme MLflow has no store for
        "http://",
        "http://host:notaport",
        "https://host:70000",
        "sqlite:relative.db",
        "postgresql://u:pw@db:port/x",
    ],
)
def test_a_malformed_tracking_uri_is_one_line_naming_the_variable(uri, tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p = config.load()
    tracking.Tracker("test", p, {})  # tracking off (conftest): the URI is not read
    monkeypatch.delenv("FTBENCH_MLFLOW")
    with pytest.raises(UserError) as err:
        tracking.Tracker("test", p, {})
    message = str(err.value)
    assert message.startswith(f"MLFLOW_TRACKING_URI={redact(uri)}: ") and "\n" not in message


@pytest.mark.parametrize(
    "uri", ["sqlite:////abs/mlflow.db", "/abs/mlruns", "file:///abs/mlruns", "databricks"]
)
def test_well_formed_tracking_uris_pass(uri):
    assert tracking.client_uri(uri) == uri


def test_a_malformed_tracking_uri_stops_a_stage_before_any_work(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path)
    env = stage_env(
        MLFLOW_TRACKING_URI=f"http://alice:{PASSWORD}@127.0.0.1:notaport", PYTHONPATH=str(ROOT / "src")
    )
    done = run_stage(tmp_path, env, "ftbench", "data")
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ftbench: error: MLFLOW_TRACKING_URI=http://alice:***@127.0.0.1:notaport: ")
    assert PASSWORD not in done.stdout + done.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "data").exists()


def test_redact_masks_a_urls_password_and_keeps_the_rest():
    assert redact("at http://alice:s3cret@127.0.0.1:5000/x") == "at http://alice:***@127.0.0.1:5000/x"
    assert redact("postgresql+psycopg2://u:p@ss:w@db/x") == "postgresql+psycopg2://u:***@db/x"  # "@" in it
    assert redact("https://:tok@h and http://c:d@e") == "https://:***@h and http://c:***@e"
    for kept in ("http://alice@h:5000", "http://h:5000/a@b", "http://h:5000?q=a@b", "sqlite:////a/b.db"):
        assert redact(kept) == kept


def test_a_uris_login_moves_into_mlflows_own_variables(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "other")
    assert tracking.client_uri("https://alice:p%40ss@host:5000/mlflow") == "https://host:5000/mlflow"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (
        "alice",
        "p@ss",
    )


def test_tracking_sets_mlflows_retry_limits_when_it_starts_not_at_import(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    code = (
        "import os, ftbench; before = dict(os.environ); import ftbench.common.tracking; "
        "print(dict(os.environ) == before)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert imported.stdout.strip() == "True", imported.stderr[-2000:]
    monkeypatch.delenv("FTBENCH_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens
    start = time.perf_counter()
    tracker = tracking.Tracker("test", config.load(), {})
    assert time.perf_counter() - start < 10 and tracker.run_id is None
    assert "cannot be reached (no answer)" in capsys.readouterr().err
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    )
