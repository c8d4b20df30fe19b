"""A stage command handed to the warm server (ftbench/warm.py, ftbench/handover.py) runs as it runs alone:
the same outputs, errors, exit status and signals; a command the server declines runs alone."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ftbench import checkpoint, commands, handover, paths

from .conftest import write_params
from .test_pipeline import dvc_repo


def test_only_a_plain_stage_command_is_handed_over():
    assert handover.stage_module(["python", "-m", "ftbench.train", "qlora"]) == "ftbench.train"
    assert handover.stage_module(["python", "-m", "ftbench.report"]) == "ftbench.report"
    assert handover.stage_module(["python", "-m", "ftbench.warm", "dvc"]) is None  # not a stage
    assert handover.stage_module(["python", "-m", "other.train"]) is None
    assert handover.stage_module(["python", "-u", "-m", "ftbench.train"]) is None  # flags: it runs alone
    assert handover.stage_module(["python", "script.py"]) is None


def test_every_pipeline_stage_is_one_the_server_takes():
    # a stage added to commands.COMMANDS but not to handover.STAGES would silently run cold
    assert set(handover.STAGES) == set(commands.COMMANDS) - {"bench"}


def test_what_a_gpu_host_warms_leaves_bitsandbytes_unimported():
    """bitsandbytes initialises CUDA on import (its CUDA specs), and torch then refuses CUDA in every forked
    stage: on the H200 galore_torch's import of it (its 8-bit AdamW) made the server refuse to serve."""
    from ftbench import warm

    code = f"import importlib, sys; [importlib.import_module(m) for m in {warm.WARM_ON_GPU!r}]; "
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bitsandbytes', 'peft')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class Server:
    """A real server on a socket in `folder`, its log in a file."""

    def __init__(self, folder: Path) -> None:
        self.path, self.log = folder / "socket", folder / "server.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ftbench.warm", "--serve", str(self.path)], stderr=log
            )
        deadline = time.monotonic() + 300
        while not self.path.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def spares(self, count: int = 1) -> list[int]:
        """The pids of the first `count` spares the server made ready (waits for them)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready = [line for line in self.lines() if line.startswith("ftbench.warm: a spare (process ")]
            if len(ready) >= count:
                return [int(line.split("(process ")[1].split(")")[0]) for line in ready]
            time.sleep(0.1)
        raise AssertionError(self.log.read_text())

    def child(self, module: str) -> int:
        """The pid of the child the server started for `module` (waits for it)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.startswith(f"ftbench.warm: {module} (pid ") and line.endswith(" started"):
                    return int(line.split("(pid ")[1].split(")")[0])
            time.sleep(0.1)
        raise AssertionError(self.log.read_text())


@pytest.fixture
def server(prepared, tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("warm"))
    yield running
    running.process.terminate()
    running.process.wait()


def stage(*args: str, warm: Server | None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    if warm:
        environment[handover.ENV] = str(warm.path)
    return subprocess.run(
        [sys.executable, "-m", *args], env=environment, capture_output=True, text=True, timeout=600
    )


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def test_a_stage_the_server_runs_writes_what_it_writes_alone(server):
    alone = stage("ftbench.data", warm=None)
    assert alone.returncode == 0, alone.stderr
    written = digest(paths.PREPARED)
    warm = stage("ftbench.data", warm=server)
    assert warm.returncode == 0, warm.stderr
    assert any(line.endswith("exited 0") and "ftbench.data" in line for line in server.lines())
    assert digest(paths.PREPARED) == written
    assert warm.stderr.splitlines()[-1] == alone.stderr.splitlines()[-1]  # its log, on the command's stderr


def test_a_command_runs_in_the_spare_made_ahead_and_the_next_is_made_at_once(server):
    """The spare has done every stage's imports before the command comes (on a GPU host most of a stage's
    start-up); the next one is forked as soon as a command has taken it."""
    (first,) = server.spares(1)
    run = stage("ftbench.data", warm=server)
    assert run.returncode == 0, run.stderr
    assert server.child("ftbench.data") == first
    second = server.spares(2)[1]
    assert second != first and psutil.pid_exists(second)
    lines = server.lines()
    started = lines.index(f"ftbench.warm: ftbench.data (pid {first}) started")
    assert started < next(i for i, line in enumerate(lines) if f"(process {second})" in line)


def test_a_command_finding_the_spare_dead_runs_in_a_child_forked_for_it(server):
    (spare,) = server.spares(1)
    os.kill(spare, signal.SIGKILL)
    run = stage("ftbench.data", warm=server)
    assert run.returncode == 0, run.stderr
    assert server.child("ftbench.data") != spare
    said = f"ftbench.warm: the spare (process {spare}) had exited; stages start in children forked for them"
    assert said in server.lines()


def test_a_user_error_reads_and_exits_as_it_does_alone(server, project, tiny_model_dir):
    write_params(project, tiny_model_dir, **{"data.sizes.train": -1})
    alone = stage("ftbench.data", warm=None)
    warm = stage("ftbench.data", warm=server)
    assert alone.returncode == warm.returncode == 2
    assert warm.stderr == alone.stderr and warm.stderr.startswith("ftbench: error: ")
    assert any("ftbench.data" in line and line.endswith("exited 2") for line in server.lines())


def test_a_command_in_another_import_time_environment_is_declined_and_runs_alone(server):
    run = stage("ftbench.data", warm=server, HF_HUB_DOWNLOAD_TIMEOUT="7")
    assert run.returncode == 0, run.stderr
    assert any("declined ftbench.data: HF_HUB_DOWNLOAD_TIMEOUT" in line for line in server.lines())
    assert not any("(pid" in line for line in server.lines())


def long_training(project: Path, tiny_model_dir: Path) -> None:
    """lora for many epochs: minutes of training on the tiny model, so a signal finds it running."""
    write_params(project, tiny_model_dir, **{"methods.lora.epochs": 200})


def start_training(server: Server) -> tuple[subprocess.Popen, int]:
    command = subprocess.Popen(
        [sys.executable, "-m", "ftbench.train", "lora"],
        env={**os.environ, handover.ENV: str(server.path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    return command, server.child("ftbench.train")


def until_training(stderr) -> str:
    """What the stage wrote until its training loop started (its first progress line): from then on,
    SIGTERM asks it to save a checkpoint and stop."""
    seen = ""
    for line in stderr:
        seen += line
        if line.startswith("train@lora: 0/"):
            return seen
    raise AssertionError(seen)


def test_a_signal_to_the_command_reaches_the_stage(server, project, tiny_model_dir):
    """SIGTERM to the command: the training saves a checkpoint and says so, as a plain process does."""
    long_training(project, tiny_model_dir)
    command, _ = start_training(server)
    seen = until_training(command.stderr)
    command.send_signal(signal.SIGTERM)
    seen += command.stderr.read()
    assert command.wait(timeout=300) != 0
    assert "checkpoint saved in checkpoints/lora/builtin-seed0, rerun to resume" in seen


def test_two_commands_at_once_run_each_in_a_spare_of_its_own(server, project, tiny_model_dir):
    long_training(project, tiny_model_dir)
    command, training = start_training(server)
    first, second = server.spares(2)[:2]
    assert training == first
    run = stage("ftbench.report", "--help", warm=server)
    assert run.returncode == 0, run.stderr
    assert server.child("ftbench.report") == second
    command.kill()
    command.wait()


def test_a_command_killed_takes_its_stage_with_it(server, project, tiny_model_dir):
    long_training(project, tiny_model_dir)
    command, child = start_training(server)
    command.kill()  # SIGKILL: nothing of the command runs to pass it on
    command.wait()
    deadline = time.monotonic() + 30
    while not any(line == f"ftbench.warm: ftbench.train (pid {child}) exited -9" for line in server.lines()):
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.2)


def test_a_timeout_of_the_wrapped_command_reaches_its_stage_and_stops_the_server(
    prepared, project, tiny_model_dir
):
    """A signal to the wrapper alone (a scheduler's): `python -m ftbench.warm <command>` passes it on."""
    long_training(project, tiny_model_dir)
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "ftbench.warm", sys.executable, "-m", "ftbench.train", "lora"],
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = until_training(wrapper.stderr)  # the server's log and the stage's, on the wrapper's stderr
    (server,) = [p for p in psutil.Process(wrapper.pid).children() if "--serve" in p.cmdline()]
    wrapper.send_signal(signal.SIGTERM)
    seen += wrapper.stderr.read()
    assert wrapper.wait(timeout=300) != 0
    assert "checkpoint saved in checkpoints/lora/builtin-seed0, rerun to resume" in seen
    assert not psutil.pid_exists(server.pid)  # stopped and reaped


def dvc_env() -> dict:
    """The environment a `dvc repro` of the test repo runs in: this interpreter's dvc first on PATH, and
    no MLflow server of the session's."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.slow
def test_timeout_over_dvc_repro_returns_once_the_stage_has_saved(tmp_path, tiny_model_dir):
    """`timeout` signals its whole process group: DVC dies at once and leaves its stage running, which
    saves a checkpoint and stops. The server waits for that stage before it exits, so `timeout` returns
    with the checkpoint on disk: a script (or a machine) that ends after it loses nothing."""
    repo = dvc_repo(tmp_path, tiny_model_dir)
    write_params(repo, tiny_model_dir, **{"methods.lora.epochs": 200})
    env = dvc_env()
    command = ["timeout", "900", sys.executable, "-m", "ftbench.warm", "dvc", "repro", "train@lora"]
    top = subprocess.Popen(command, cwd=repo, env=env, stderr=subprocess.PIPE, text=True)
    until_training(top.stderr)
    (server,) = [
        p
        for p in psutil.Process(top.pid).children(recursive=True)
        if "--serve" in p.cmdline() and "--serve" not in p.parent().cmdline()
    ]
    children = server.children()  # the stage, and the spare waiting for the next command
    top.send_signal(signal.SIGTERM)  # relayed as on expiry: to its command, then to its whole group
    assert top.wait(timeout=300) != 0
    assert not any(psutil.pid_exists(c.pid) for c in children)  # ended and reaped before timeout returned
    assert (repo / checkpoint.folder("lora", "builtin/seed0") / checkpoint.FILE).exists()
    assert "checkpoint saved in checkpoints/lora/builtin-seed0" in top.stderr.read()


@pytest.mark.slow
def test_dvc_repro_under_the_warm_server_runs_its_stages_in_the_server(tmp_path, tiny_model_dir):
    repo = dvc_repo(tmp_path, tiny_model_dir)
    env = dvc_env()
    run = subprocess.run(
        [sys.executable, "-m", "ftbench.warm", "dvc", "repro", "data"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Running stage 'model'" in run.stdout and "Running stage 'data'" in run.stdout
    for module in ("ftbench.model", "ftbench.data"):  # both ran in the server's children
        assert any(line.startswith(f"ftbench.warm: {module} (pid") for line in run.stderr.splitlines())
    assert (repo / "data/prepared").is_dir()
