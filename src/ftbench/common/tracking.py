"""Every executed stage becomes one MLflow run: tags, params, step metrics, resources, artifacts.

Under DVC, the stage runs of one `dvc repro` or `dvc exp run` (or one queued experiment) are nested
under one parent run named after the DVC experiment, so an experiment is one row in the UI. Each stage
is its own process, so the parent is found by the invocation it belongs to: the nearest dvc process
above the stage (host, pid, start time), stored in the `ftbench.invocation` tag. A stage run by hand,
outside DVC, has no invocation to group and gets no parent.

The store is MLFLOW_TRACKING_URI, or by default a SQLite database at the project root (an absolute
path, so that `dvc exp run --queue`, which runs in .dvc/tmp/exps/..., logs to the same one as
`dvc repro`); the experiment is MLFLOW_EXPERIMENT_NAME, else `ftbench`. A server that asks for a login
takes it in the URI (http://user:password@host:5000) or in MLflow's MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD. Step metrics go through MLflow's asynchronous logging, so the training loop
never waits on the store. Tracking never stops training: if the store cannot be reached, one warning
says so and the stage goes on; its numbers stay in metrics/ either way. A malformed URI, though, stops
the stage before any work (one line). Secrets are never logged, and a URI is shown without its
password. FTBENCH_MLFLOW=off turns tracking off.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psutil

from ftbench.common import config, distributed
from ftbench.common.errors import UserError, redact
from ftbench.common.progress import LOG
from ftbench.common.resources import Record, measure

EXPERIMENT = "ftbench"
INVOCATION = "ftbench.invocation"
PARENT = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"
SECRET_KEY = re.compile(r"token|secret|passw|api[_-]?key|access[_-]?key|credential", re.IGNORECASE)
HTTP = ("http", "https")
NAMED_STORES = ("databricks", "databricks-uc", "uc")  # URIs MLflow takes whole, with no scheme


def project_root(cwd: Path | None = None) -> Path:
    """The repository a stage belongs to, also from inside a queued experiment's temporary copy."""
    parts = (cwd or Path.cwd()).resolve().parts
    return Path(*parts[: parts.index(".dvc")]) if ".dvc" in parts else Path(*parts)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def dvc_exp() -> str:
    return os.environ.get("DVC_EXP_NAME", "workspace")


def dvc_invocation() -> str | None:
    """The `dvc repro` / `dvc exp run` / queued `dvc exp exec-run` this process runs under, as
    host:pid:start time (a pid alone is reused), or None outside DVC."""
    for proc in psutil.Process().parents():
        with contextlib.suppress(psutil.Error):
            if _is_dvc(proc.cmdline()):
                return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"
    return None


def _is_dvc(cmdline: list[str]) -> bool:
    """`dvc ...`, `python .../bin/dvc ...` (an entry-point script) or `python -m dvc ...`."""
    return any(Path(arg).name == "dvc" for arg in cmdline[:2]) or cmdline[1:3] == ["-m", "dvc"]


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


def client_uri(uri: str) -> str:
    """`uri` checked (a UserError if malformed) and as MLflow's client is to get it.

    A server's user:password@ moves into MLflow's own MLFLOW_TRACKING_USERNAME / _PASSWORD, which its
    REST client and artifact uploads send as HTTP Basic auth. Its client would also send the userinfo
    (requests reads it as Basic auth), but MLflow prints the URI it is given ("View run ... at: <uri>")
    and puts it in its error messages, password and all. The URI's own credentials win over the
    variables, as they do in requests.
    """
    check_uri(uri)
    parts = urlsplit(uri)
    if parts.scheme not in HTTP or "@" not in parts.netloc:
        return uri
    if parts.username is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def check_uri(uri: str) -> None:
    """A UserError unless MLflow has a store for `uri`'s scheme (its own table of them) and the URI is
    whole: a server's host and numeric port, a database URL SQLAlchemy parses. MLflow takes a value with
    no scheme for a folder, so one must be an absolute path: else a typo (`htp//host`, `127.0.0.1:5000`)
    would quietly become a folder in each stage's working directory."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.db.db_types import DATABASE_ENGINES
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry  # no public accessor
    from mlflow.utils.uri import get_uri_scheme

    try:
        _tracking_store_registry.get_store_builder(uri)
    except MlflowException as err:
        schemes = ", ".join(s for s in getattr(err, "supported_uri_schemes", []) if s)
        raise _bad_uri(uri, f"MLflow has no store for its scheme (it has {schemes})") from None
    parts, scheme = urlsplit(uri), get_uri_scheme(uri)
    if scheme in HTTP:
        try:
            _ = parts.port  # parsing it raises for a port that is no number in 0-65535
        except ValueError:
            raise _bad_uri(uri, "its port is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise _bad_uri(uri, "it names no host")
    elif scheme in DATABASE_ENGINES:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(uri)
        except (ArgumentError, ValueError):
            raise _bad_uri(uri, "SQLAlchemy cannot read it as a database URL") from None
    elif not scheme and uri not in NAMED_STORES and not Path(uri).is_absolute():
        raise _bad_uri(uri, "it has no scheme, so MLflow would take it for a folder in the working directory")


def _bad_uri(uri: str, why: str) -> UserError:
    return UserError(
        f"MLFLOW_TRACKING_URI={redact(uri)}: {why}; set it to a server (http://host:5000, with "
        "user:password@ before the host if it asks for a login), a database "
        "(sqlite:////absolute/path/mlflow.db) or an absolute folder, or unset it for the project's "
        "mlflow.db (FTBENCH_MLFLOW=off: no tracking)"
    )


def _reachable(uri: str) -> bool:
    return _unreachable(uri) is None


def _unreachable(uri: str) -> str | None:
    """Why the server does not answer /health to MLflow's own request, sent with the credentials its
    client will send; None when it does (and for a store that is no server)."""
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=3)
    except (OSError, MlflowException):  # MLflow wraps a refused or timed-out connection in its own
        return "no answer"
    if response.status_code in (401, 403):
        return f"HTTP {response.status_code}: check the user and password"
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


class Tracker:
    """One MLflow run (nested under its DVC invocation's run); every call is best effort and a failure
    turns tracking off with one warning."""

    def __init__(self, stage: str, p: config.Params, tags: dict[str, str]) -> None:
        self.client = self.run_id = self.parent_id = None
        self.pending: list = []  # step metrics on their way to the store (RunOperations)
        if os.environ.get("FTBENCH_MLFLOW") == "off":
            return
        uri = client_uri(tracking_uri())  # on every rank: a malformed URI stops them all alike
        if not distributed.is_main():
            return
        # MLflow reads these at each request: a dead server must not hold a stage for minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        problem = _unreachable(uri)
        if problem:
            self._warn(f"MLflow tracking server {redact(tracking_uri())} cannot be reached ({problem})")
            return
        self._call(self._start, uri, stage, p, tags)

    def _start(self, uri: str, stage: str, p: config.Params, tags: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        name = experiment_name()
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
        params = [Param(k, v) for k, v in flat_params(p).items()]
        shared = {
            "dvc_exp": dvc_exp(),
            GIT_COMMIT: _git_commit(),
            "seeds": ",".join(map(str, p.seeds)),
            "datasets": ",".join(p.data.datasets),
        }
        invocation = dvc_invocation()
        if invocation:
            self.parent_id = self._parent_run(exp_id, invocation, shared, params)
            shared[PARENT] = self.parent_id
        run = self.client.create_run(
            exp_id, run_name=f"{stage} ({dvc_exp()})", tags=_clean({"stage": stage, **shared, **tags})
        )
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=params)

    def _parent_run(self, exp_id: str, invocation: str, tags: dict[str, str], params: list) -> str:
        """The invocation's run, made by its first stage; RUNNING while one of its stages runs.

        DVC runs one invocation's stages one after another, so two never race to make it."""
        found = self.client.search_runs([exp_id], f"tags.`{INVOCATION}` = '{invocation}'", max_results=1)
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        run = self.client.create_run(
            exp_id, run_name=dvc_exp(), tags=_clean({INVOCATION: invocation, **tags})
        )
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

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
        LOG.warning(f"{what}; tracking is off for this stage, metrics/ keeps every number")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self._call(self._log_step, step, metrics)

    def _log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Queued for MLflow's background thread: the loop goes on while the store writes."""
        self.pending.append(
            self.client.log_batch(self.run_id, metrics=_metrics(step, metrics), synchronous=False)
        )

    def _wait_for_steps(self) -> None:
        """Every queued step metric is stored (or refused) before the run closes; a refusal is one
        warning, and the run still closes with the stage's status."""
        try:
            for operations in self.pending:
                operations.wait()
        except Exception as err:  # the store's own error types, as in _call
            LOG.warning(
                f"MLflow did not store some step metrics ({type(err).__name__}: "
                f"{redact(str(err))[:200]}); metrics/ keeps every number"
            )

    def finish(self, record: dict, artifacts: list[Path], status: str) -> None:
        self._call(self._finish, record, artifacts, status)

    def _finish(self, record: dict, artifacts: list[Path], status: str) -> None:
        self._wait_for_steps()
        numbers = {f"resources.{k}": v for k, v in record.items() if isinstance(v, (int, float))}
        numbers.update({f"resources.phase.{k}": v for k, v in record.get("phases_s", {}).items()})
        self.client.log_batch(self.run_id, metrics=_metrics(0, numbers))
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
            elif path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        self.client.set_terminated(self.run_id, status)
        if self.parent_id:  # FINISHED until the next stage of the invocation starts, FAILED if one failed
            self.client.set_terminated(self.parent_id, status)


def _clean(tags: dict[str, str]) -> dict[str, str]:
    return {k: redact(str(v)) for k, v in tags.items()}


def _metrics(step: int, values: dict[str, float]) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]


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
