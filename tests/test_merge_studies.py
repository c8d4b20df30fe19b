"""tools/merge_studies.py: one-seed studies split from a fabricated two-seed study merge back into it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ftbench.common import config, paths
from ftbench.common.atomic import write_json
from ftbench.evaluation import score
from ftbench.report.study import models
from ftbench.stages import report

from .conftest import ROOT, write_params
from .report.fabricate import fabricate_stage_outputs

SCRIPT = ROOT / "tools" / "merge_studies.py"
SEED_INDEPENDENT = ("model", "data", "evaluate-base")


def merge(out: Path, *studies: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, str(out), *map(str, studies)], capture_output=True, text=True
    )


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def whole(project, tiny_model_dir) -> config.Params:
    """A two-seed study in the project: the report's fabricated outputs, and train/, merge/ and the model
    and data stages' records as the pipeline writes them."""
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p, final_answers=set(p.data.datasets))
    for name in p.methods:
        runs = {
            run.key: {"tokens": 100 + run.seed, "final_loss": 1.0 - run.seed / 10} for run in p.runs(name)
        }
        write_json(paths.TRAIN / f"{name}.json", runs)
    merged = {run.key: {"base": "nf4", "relative_delta": 0.01 * (run.seed + 1)} for run in p.runs("qlora")}
    write_json(paths.METRICS / "merge" / "qlora.json", merged)
    for stage in ("model", "data"):
        write_json(paths.RESOURCES / f"{stage}.json", {"stage": stage, "wall_s": 4.0, "peak_rss_gib": 1.0})
    return p


def one_seed_study(whole: config.Params, seed: int, folder: Path) -> Path:
    """What a study of `seed` alone writes: the two-seed study's outputs of that seed's runs (and the
    base model's), each eval file's means over those runs, every stage's record as the whole study's."""
    shutil.copytree(paths.METRICS, folder / "metrics")
    params = yaml.safe_load(Path("params.yaml").read_text())
    (folder / "params.yaml").write_text(yaml.safe_dump({**params, "seeds": [seed]}, sort_keys=False))
    for name in models(whole):
        for run in whole.runs(name):
            if run.seed not in (None, seed):
                (folder / paths.predictions_file(name, run)).unlink()
                (folder / paths.CURVES / name / f"{run.key.replace('/', '-')}.csv").unlink(missing_ok=True)
        summary = read(folder / paths.EVAL / f"{name}.json")
        summary["runs"] = {k: r for k, r in summary["runs"].items() if not k.endswith(f"seed{1 - seed}")}
        for metric in [k for k in summary if k not in ("convention", "runs")]:
            summary[metric] = float(np.mean([r[metric] for r in summary["runs"].values()]))
        write_json(folder / paths.EVAL / f"{name}.json", summary)
    for f in [*(folder / paths.TRAIN).glob("*.json"), folder / paths.METRICS / "merge" / "qlora.json"]:
        write_json(f, {k: v for k, v in read(f).items() if k.endswith(f"seed{seed}")})
    return folder


@pytest.fixture
def studies(whole, project) -> tuple[Path, Path]:
    return one_seed_study(whole, 0, project / "g0"), one_seed_study(whole, 1, project / "g1")


def test_two_one_seed_studies_merge_into_the_two_seed_study_and_report_over_both(
    whole, studies, project, monkeypatch
):
    out = project / "out"
    done = merge(out, *studies)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((out / "params.yaml").read_text()) == yaml.safe_load(
        Path("params.yaml").read_text()
    )
    for name in models(whole):
        merged, expected = read(out / paths.EVAL / f"{name}.json"), read(paths.EVAL / f"{name}.json")
        assert merged["runs"] == expected["runs"] and merged["convention"] == expected["convention"]
        for metric in score.logged(expected["runs"]):  # the means over both seeds' runs
            values = [r[metric] for r in expected["runs"].values()]
            assert merged[metric] == pytest.approx(np.mean(values), abs=1e-4), (name, metric)
    for f in [*paths.TRAIN.glob("*.json"), paths.METRICS / "merge" / "qlora.json"]:
        assert list(read(out / f).items()) == list(read(f).items())  # the runs in one study's order
    for folder in (paths.PREDICTIONS, paths.CURVES):
        files = sorted(f.relative_to(folder) for f in folder.rglob("*") if f.is_file())
        assert sorted(f.relative_to(out / folder) for f in (out / folder).rglob("*") if f.is_file()) == files
        assert all((out / folder / f).read_bytes() == (folder / f).read_bytes() for f in files)
    assert read(out / paths.DATA_SUMMARY) == read(paths.DATA_SUMMARY)

    shutil.copytree(paths.BASE, out / paths.BASE)  # the report re-tokenizes the answers
    monkeypatch.chdir(out)
    report.run(config.load())
    assert set(read(paths.REPORT_JSON)["models"]["hybrid"]) == {"builtin/seed0", "builtin/seed1", "cost"}


def test_per_seed_stages_are_summed_and_seed_independent_ones_kept_once(studies, project):
    g0, g1 = studies
    for stage in SEED_INDEPENDENT:  # measured again in each study: the first study's record is kept
        write_json(
            g1 / paths.RESOURCES / f"{stage}.json", {"stage": stage, "wall_s": 99.0, "peak_rss_gib": 1.0}
        )
    common = {"stage": "train-qlora", "device": "cpu", "started_at": 1.0, "finished_at": 11.0}
    write_json(
        g0 / paths.RESOURCES / "train-qlora.json",
        {**common, "wall_s": 10, "tokens": 100, "train_s": 8, "mfu": 0.1, "energy_j": 50, "peak_gpu_gib": 3.0}
        | {"phases_s": {"load": 1, "train": 8}, "tokens_per_s": 12.5},  # older code: no resumed_train_s
    )
    write_json(
        g1 / paths.RESOURCES / "train-qlora.json",
        {
            **common,
            "wall_s": 20,
            "tokens": 300,
            "train_s": 12,
            "mfu": 0.2,
            "energy_j": None,
            "peak_gpu_gib": 4,
        }
        | {"phases_s": {"load": 2, "train": 12, "save": 1}, "tokens_per_s": 25.0, "resumed_train_s": 5.0},
    )
    out = project / "out"
    assert merge(out, g0, g1).returncode == 0

    assert read(out / paths.RESOURCES / "train-qlora.json") == {
        "stage": "train-qlora",
        "device": "cpu",
        "wall_s": 30,
        "tokens": 400,
        "train_s": 20,
        "mfu": 0.16,  # weighted by each study's training time
        "energy_j": None,  # one study could not measure it
        "peak_gpu_gib": 4,
        "phases_s": {"load": 3, "train": 20, "save": 1},
        "tokens_per_s": 20.0,
        "resumed_train_s": 5.0,  # one study's stage resumed: its earlier attempt is charged (costs.cost)
        "merged_from_studies": 2,
    }
    for stage in SEED_INDEPENDENT:
        assert read(out / paths.RESOURCES / f"{stage}.json") == read(g0 / paths.RESOURCES / f"{stage}.json")
    for stage in ("merge-qlora", "train-hybrid", "evaluate-qlora", "evaluate-ensemble"):
        assert (
            read(out / paths.RESOURCES / f"{stage}.json")["wall_s"]
            == 2 * read(paths.RESOURCES / f"{stage}.json")["wall_s"]
        )


def test_studies_that_differ_beyond_seeds_share_a_seed_or_a_base_answer_are_refused(studies, project):
    g0, g1 = studies
    out = project / "out"
    params = yaml.safe_load((g1 / "params.yaml").read_text())

    (g1 / "params.yaml").write_text(yaml.safe_dump({**params, "seeds": [1, 0]}))
    refused = merge(out, g0, g1)
    assert refused.stderr.strip().endswith(
        f"error: seed 0 ran in both {g0} and {g1}; merge studies of disjoint seeds"
    )

    test_rows = params["data"]["sizes"]["test"]
    params["data"]["sizes"]["test"] += 1
    (g1 / "params.yaml").write_text(yaml.safe_dump(params))
    refused = merge(out, g0, g1)
    assert (
        refused.returncode != 0
        and f"at data.sizes.test ({test_rows} against {test_rows + 1})" in refused.stderr
    )
    assert len(refused.stderr.strip().splitlines()) == 1

    params["data"]["sizes"]["test"] -= 1
    (g1 / "params.yaml").write_text(yaml.safe_dump(params))
    base = g1 / paths.PREDICTIONS / "base" / "builtin.jsonl"
    base.write_text(base.read_text().replace("maybe", "perhaps"))
    refused = merge(out, g0, g1)
    assert "predictions/base/builtin.jsonl differs between the studies" in refused.stderr
    assert not out.exists()
