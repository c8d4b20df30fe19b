"""ftbench.report.sections: the Conventions section."""

import json

from ftbench.common import config, paths
from ftbench.common.atomic import write_json
from ftbench.stages import report

from ..conftest import write_params
from .fabricate import fabricate_stage_outputs


def test_conventions_name_a_method_that_is_not_galore_as_published(project, tiny_model_dir):
    projected = {"accumulation": "projected", "layerwise": True}  # the accumulation only applies layerwise
    overrides = {f"methods.hybrid.galore.{k}": v for k, v in projected.items()}
    write_params(project, tiny_model_dir, **overrides, **{"train.cuda_graphs": False})
    p = config.load()
    fabricate_stage_outputs(p)
    conventions = report.run(p).split("## Quality")[0]
    assert "Deviation, hybrid: galore.accumulation: projected" in conventions
    assert "Deviation, galore" not in conventions  # the default is GaLore as published


def test_conventions_say_which_form_each_adapter_model_was_scored_in(project):
    p = config.load()
    fabricate_stage_outputs(p)
    forms = {
        "qlora": {
            "scored_form": "merged-bfloat16",
            "continuity": {"rows": 32, "relative_difference": 0.0012, "tolerance": 0.01},
        },
        "qlora-3ep": {"scored_form": "nf4+adapter"},
        "lora": {"scored_form": "merged-bfloat16"},
    }
    for name, facts in forms.items():
        saved = json.loads((paths.EVAL / f"{name}.json").read_text())
        saved["scored_form"] = facts["scored_form"]
        if "continuity" in facts:
            for run in saved["runs"].values():
                run["continuity"] = facts["continuity"]
        write_json(paths.EVAL / f"{name}.json", saved)
    conventions = report.run(p).split("## Quality")[0]
    assert "Scored form, qlora: merged-bfloat16 (the adapter merged into the dequantized NF4" in conventions
    assert "first 32 test rows is within 0.120% of NF4 + adapter's, tolerance 1%" in conventions
    assert "Scored form, qlora-3ep: nf4+adapter (the adapter on the NF4 base, as trained)." in conventions
    assert (
        "Scored form, lora: merged-bfloat16 (the adapter merged into the unquantized weights" in conventions
    )
    assert "Scored form, galore" not in conventions and "Scored form, hybrid" not in conventions
