"""Every executed stage becomes one MLflow run: tags, params, step metrics, resources, artifacts.

The store is MLFLOW_TRACKING_URI, or by default a SQLite database at the project root (an absolute
path, so that `dvc exp run --queue`, which runs in .dvc/tmp/exps/..., logs to the same one as
`dvc repro`). Tracking never stops training: if the store cannot be reached, one warning says so and
the stage goes on; its numbers stay in metrics/ either way. Secrets are never logged.
FTBENCH_MLFLOW=off turns tracking off.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ftbench import config, distributed
from ftbench.errors import redact
from ftbench.resources import Record, measure

EXPERIMENT = "ftbench"
SECRET_KEY = re.compile(r"token|secret|passw|api[_-]?key|access[_-]?key|credential", re.IGNORECASE)
# A dead server must not hold a stage for minutes of client retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def project_root(cwd: Path | None = None) -> Path:
    """The repository a stage belongs to, also from inside a queued experiment's temporary copy."""
    parts = (cwd or Path.cwd()).resolve().parts
    return Path(*parts[: parts.index(".dvc")]) if ".dvc" in parts else Path(*parts)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def flat_params(p: config.Params) -> dict[str, str]:
    """params.yaml flattened to `params.a.b` keys; anything named like a secret is left out."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if not SECRET_KEY.search(str(k)):
                    walk(f"{prefix}.{k}", v)
        else:
            out[prefix] = redact(str(value))[:6000]

    walk("params", p.model_dump(mode="json"))
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _reachable(uri: str) -> bool:
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


class Tracker:
    """One MLflow run; every call is best effort and a failure turns tracking off with one warning."""

    def __init__(self, stage: str, p: config.Params, tags: dict[str, str]) -> None:
        self.client = self.run_id = None
        uri = tracking_uri()
        if os.environ.get("FTBENCH_MLFLOW") == "off" or not distributed.is_main():
            return
        if not _reachable(uri):
            self._warn(f"MLflow tracking server {redact(uri)} cannot be reached")
            return
        self._call(self._start, uri, stage, p, tags)

    def _start(self, uri: str, stage: str, p: config.Params, tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(EXPERIMENT)
        all_tags = {
            "stage": stage,
            "dvc_exp": os.environ.get("DVC_EXP_NAME", "workspace"),
            "git_commit": _git_commit(),
            "seeds": ",".join(map(str, p.seeds)),
            "datasets": ",".join(p.data.datasets),
            "mlflow.runName": f"{stage} ({os.environ.get('DVC_EXP_NAME', 'workspace')})",
            **tags,
        }
        self.run_id = self.client.create_run(exp_id).info.run_id
        self.client.log_batch(
            self.run_id,
            params=[Param(k, v) for k, v in flat_params(p).items()],
            tags=[RunTag(k, redact(str(v))) for k, v in all_tags.items()],
        )

    def _call(self, fn, *args) -> None:
        if fn != self._start and self.run_id is None:
            return
        try:
            fn(*args)
        except Exception as err:  # MLflow raises many types (HTTP, SQL, its own); none may stop training
            self._warn(f"MLflow logging failed ({type(err).__name__}: {redact(str(err))[:200]})")
            self.run_id = None

    @staticmethod
    def _warn(what: str) -> None:
        print(
            f"ftbench: warning: {what}; tracking is off for this stage, metrics/ keeps every number",
            file=sys.stderr,
        )

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self._call(self._log_metrics, step, metrics)

    def _log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, record: dict, artifacts: list[Path], status: str) -> None:
        self._call(self._finish, record, artifacts, status)

    def _finish(self, record: dict, artifacts: list[Path], status: str) -> None:
        numbers = {f"resources.{k}": v for k, v in record.items() if isinstance(v, (int, float))}
        numbers.update({f"resources.phase.{k}": v for k, v in record.get("phases_s", {}).items()})
        self._log_metrics(0, numbers)
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
            elif path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        self.client.set_terminated(self.run_id, status)


class StageRun:
    """What a stage body gets: the resource record, step logging, and artifacts to attach."""

    def __init__(self, record: Record, tracker: Tracker) -> None:
        self.record, self.tracker, self.artifacts = record, tracker, []

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_step(step, metrics)


@contextlib.contextmanager
def stage(name: str, p: config.Params, record_file: bool = True, **tags: str) -> Iterator[StageRun]:
    """Measure the stage and log it to MLflow (FINISHED, or FAILED if the body raises).

    `record_file=False` keeps the resource record out of metrics/resources (MLflow still gets it).
    """
    tracker = Tracker(name, p, tags)
    run = None
    try:
        with measure(name, write=record_file and distributed.is_main()) as record:
            run = StageRun(record, tracker)
            yield run
    except BaseException:
        tracker.finish(dict(run.record) if run else {}, [], "FAILED")
        raise
    tracker.finish(dict(run.record), run.artifacts, "FINISHED")
