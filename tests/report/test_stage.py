"""The report stage end to end: every section, from a fabricated study of params.yaml's methods."""

import json

import yaml

from ftbench.common import config, paths
from ftbench.report import costs
from ftbench.stages import report

from ..conftest import ROOT, write_params
from .fabricate import expected_cost, fabricate_stage_outputs


def test_report_holds_every_section_and_sums_the_hybrid_chain(project, tiny_model_dir):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    for title in (
        "Conventions",
        "Quality",
        "Differences",
        "The seed's expectation",
        "Ranking: quality against cost",
        "Which differences the test set can resolve",
        "Resources",
        "Data",
        "Provenance",
    ):
        assert f"## {title}" in text
    assert "**Across training seeds**" in text
    assert "Exact match" not in text  # no `#### <answer>` in the references: the report as before
    hybrid_cost = next(line for line in text.splitlines() if line.startswith("| hybrid | train-qlora"))
    c = expected_cost("hybrid", p)
    assert (
        f"| {c['wall_s']:.1f} | {c['peak_gpu_gib']:.2f} | 1.00 | {c['tokens_trained']:.0f} |" in hybrid_cost
    )
    assert "| builtin/seed0 | hybrid − qlora | ROUGE-L |" in text
    assert paths.REPORT.read_text() == text
    page = paths.REPORT_HTML.read_text()  # the same tables (headless Chromium checks the rendering)
    assert "<h2>The seed&#x27;s expectation</h2>" in page and page.count("<img") == 3
    stages = " + ".join(costs.cost_stages("hybrid", p))
    assert f"<td>hybrid</td><td>{stages}</td><td>{c['wall_s']:.1f}</td>" in page


def test_a_method_added_to_params_is_reported_with_no_edit_here(project, tiny_model_dir):
    """Issue 14's rule: a new method touches its recipe, params.yaml and its own test only; the
    report tests' fabricated study (fabricate.py) and expectations follow params.yaml."""
    qlora = yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]["qlora"]
    write_params(project, tiny_model_dir, **{"methods.qlora-4ep": {**qlora, "epochs": 4}})
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    assert "qlora-4ep" in out["ranking"]["builtin/seed0"] and "qlora-4ep-vs-base" in out["pairs"]
    c = expected_cost("qlora-4ep", p)
    assert f"| qlora-4ep | train-qlora-4ep + evaluate-qlora-4ep | {c['wall_s']:.1f} | " in text
