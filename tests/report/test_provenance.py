"""ftbench.report.provenance: the packages the stages ran on beside the report's."""

import json

import torch

from ftbench.common import config, paths
from ftbench.common.atomic import write_json
from ftbench.stages import report

from .fabricate import fabricate_stage_outputs


def test_provenance_names_the_packages_the_stages_ran_on_beside_the_reports(project):
    p = config.load()
    fabricate_stage_outputs(p)
    ran_on = "torch 2.11.0+cu130, transformers 5.17.0"  # a study's records copied from a GPU machine
    for k, record in enumerate(sorted(paths.RESOURCES.glob("*.json"))):
        environment = "a" * 16 if k else "b" * 16  # one stage ran on another environment
        write_json(record, {**json.loads(record.read_text()), "packages": ran_on, "environment": environment})
    text = report.run(p)
    assert f"| packages, the stages' | {ran_on} |" in text
    assert f"| environment digest, the stages' | {'a' * 16}, {'b' * 16} |" in text
    assert f"| packages, this report's | torch {torch.__version__}, " in text
