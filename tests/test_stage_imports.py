"""Each stage imports only what it uses: the model, data and report stages, which train and load no
adapter, never import peft, bitsandbytes or galore-torch (seconds of start-up each on a GPU machine)."""

import os
import subprocess
import sys
from pathlib import Path

from ftbench.common import config

from .report.fabricate import fabricate_stage_outputs

TRAINING_ONLY = {"peft", "bitsandbytes", "galore_torch"}


def imported(project: Path, *python_args: str) -> set[str]:
    """The top-level packages a Python process imported, by Python's own -X importtime."""
    env = {**os.environ, "FTBENCH_MLFLOW": "off"}
    command = [sys.executable, "-X", "importtime", *python_args]
    run = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [x for x in run.stderr.splitlines() if x.startswith("import time:") and "|" in x]
    return {x.rsplit("|", 1)[1].strip().split(".")[0] for x in lines}


def test_model_and_data_stages_import_no_training_library(project):
    for stage in ("model", "data"):
        assert not imported(project, "-m", "ftbench", stage) & TRAINING_ONLY, stage


def test_the_report_stage_imports_no_training_library(project):
    fabricate_stage_outputs(config.load())
    assert not imported(project, "-m", "ftbench", "report") & TRAINING_ONLY


def test_the_check_sees_a_training_library_where_one_is_imported(project):
    assert "peft" in imported(project, "-c", "import peft")
