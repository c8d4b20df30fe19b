"""ftbench.report.costs: each model's chain of stages and its cost per run."""

import json

import pytest

from ftbench.common import config, paths
from ftbench.common.atomic import write_json
from ftbench.report import costs
from ftbench.stages import report

from .fabricate import fabricate_stage_outputs, fabricated_resources


def test_chains_and_cost_stages(project):
    p = config.load()
    assert costs.chain("base", p) == []
    assert costs.chain("hybrid", p) == ["train-qlora", "merge-qlora", "train-hybrid"]
    assert costs.cost_stages("base", p) == ["evaluate-base"]
    assert costs.cost_stages("hybrid", p) == [*costs.chain("hybrid", p), "evaluate-hybrid"]
    assert costs.chain("ensemble", p) == ["train-qlora", "train-galore"]  # its members' training
    assert costs.cost_stages("ensemble", p) == ["train-qlora", "train-galore", "evaluate-ensemble"]


def test_an_ensemble_is_compared_and_costs_its_members_training_and_its_own_inference(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    row = next(line for line in text.splitlines() if line.startswith("| ensemble | ") and "[" in line)
    assert row.endswith("| - | - |")  # no test loss: ensemble writes none
    cost = next(line for line in text.splitlines() if line.startswith("| ensemble | train-qlora"))
    r, built = fabricated_resources(p), ("train-qlora", "train-galore", "evaluate-ensemble")
    wall, tokens = (sum(r[s][i] for s in built) / len(p.runs("ensemble")) for i in (0, 2))
    assert (
        f"{' + '.join(built)} | {wall:.1f} | {max(r[s][1] for s in built):.2f} | 1.00 | {tokens:.0f} |"
        in cost
    )
    assert (
        "Inference, ensemble (qlora + galore): "
        f"evaluate-ensemble {r['evaluate-ensemble'][0]:.1f} s, peak RSS 1.00 GiB, "
        f"peak GPU {r['evaluate-ensemble'][1]:.2f} GiB; its members alone: evaluate-qlora "
        f"{r['evaluate-qlora'][0]:.1f} s, peak RSS 1.00 GiB, peak GPU {r['evaluate-qlora'][1]:.2f} GiB; "
        f"evaluate-galore {r['evaluate-galore'][0]:.1f} s"
    ) in text
    saved = json.loads(paths.REPORT_JSON.read_text())
    assert saved["models"]["ensemble"]["cost"]["wall_s"] == wall
    assert {"ensemble-vs-hybrid", "ensemble-vs-base"} <= set(saved["pairs"])
    assert saved["models"]["ensemble"]["builtin/seed0"]["test_loss"] is None
    assert "ensemble" in {point["model"] for point in json.loads(paths.PARETO.read_text())}


def test_cost_on_a_cpu_has_no_gpu_peak_and_memory_falls_back_to_rss(project):
    p = config.load()
    fabricate_stage_outputs(p)
    for record in paths.RESOURCES.glob("*.json"):
        write_json(record, {**json.loads(record.read_text()), "peak_gpu_gib": None, "peak_rss_gib": 2.0})
    report.run(p)
    cost = json.loads(paths.REPORT_JSON.read_text())["models"]["galore"]["cost"]
    assert cost["peak_gpu_gib"] is None and cost["peak_rss_gib"] == 2.0
    points = json.loads(paths.PARETO.read_text())
    assert all(pt["memory"] == "peak RSS" and pt["peak_memory_gib"] == 2.0 for pt in points)


def test_a_resumed_training_stage_is_charged_its_earlier_attempts_training_seconds(project):
    p = config.load()
    fabricate_stage_outputs(p)
    report.run(p)
    before = json.loads(paths.REPORT_JSON.read_text())["models"]["galore"]["cost"]["wall_s"]
    record = paths.RESOURCES / "train-galore.json"
    write_json(record, {**json.loads(record.read_text()), "resumed_train_s": 12.0})  # train.run writes it
    report.run(p)
    after = json.loads(paths.REPORT_JSON.read_text())["models"]["galore"]["cost"]["wall_s"]
    assert after == pytest.approx(before + 12.0 / len(p.runs("galore")))


def test_a_models_gpu_memory_is_its_training_and_its_loaded_model_not_generations():
    """evaluate.batch_size: auto fills the free memory: generation's peak (37 GiB on an H100 for every
    model) would hide the methods' training memory."""
    built = [{"peak_gpu_gib": 5.9}, {"peak_gpu_gib": None}]
    evaluation = {
        "peak_gpu_gib": 37.2,
        "phase_peak_gpu_gib": {"load": 1.6, "merge": 6.1, "generate": 37.2, "test_loss": 37.2},
    }
    assert costs.model_gpu_peaks(built, evaluation) == [5.9, 1.6, 6.1]
    assert costs.model_gpu_peaks([], {"peak_gpu_gib": 2.5, "phase_peak_gpu_gib": {"load": 2.5}}) == [2.5]
    # a record without phase peaks (a CPU's, or older) counts whole
    assert costs.model_gpu_peaks(built, {"peak_gpu_gib": 37.2}) == [5.9, 37.2]
    assert costs.model_gpu_peaks([], {"peak_gpu_gib": None}) == []
