"""tools/grid_report.py's refusals (the report over a queued grid runs in tests/test_queue.py)."""

import subprocess
import sys

from .conftest import ROOT
from .test_pipeline import sh

SCRIPT = ROOT / "tools/grid_report.py"


def grid_report(cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True)


def test_an_unknown_experiment_is_one_line_naming_where_they_are_listed(tmp_path):
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc init")
    done = grid_report(tmp_path, "grid", "seed9")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "grid_report: error: no experiment or revision 'seed9' here; `dvc exp list` names them"
    ]
    assert not (tmp_path / "grid").exists()


def test_an_existing_output_is_kept_and_named(tmp_path):
    (tmp_path / "grid").mkdir()
    done = grid_report(tmp_path, "grid", "seed1")
    assert done.returncode == 2 and "grid exists; name a new folder" in done.stderr
