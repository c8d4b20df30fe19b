"""Data parallelism on the CPU: 2 gloo processes under torchrun against 1 process, same global batch."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ftbench.common import paths

from .conftest import write_params

# gloo process groups on one host, two at once (two pytest-xdist workers), were seen to cut each other's
# connections: every test that starts one runs on the same worker (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("gloo")

# A row has one fixed loss whatever process computes it; the sums only associate differently.
TOLERANCE = dict(rel=1e-4, abs=1e-5)
PEAK = 1e-4  # TFLOP/s: a made-up peak of the order of a CPU's, so MFU is large enough to check its arithmetic
# GaLore's layerwise mode keeps one process (each rank would find its own basis); false is the default,
# spelled out here as docs/several-gpus.md tells users to
SEVERAL_GPUS = {f"methods.{m}.galore.layerwise": False for m in ("galore", "hybrid", "multi-adapter")}


def stage(project, *args):
    env = {**os.environ, "FTBENCH_MLFLOW": "off"}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def curve(method):
    with open(paths.CURVES / method / "builtin-seed0.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


# Steps of 3 rows in passes of at most 64 tokens: rank 0 runs 2 passes a step, rank 1 runs 1.
UNEVEN_PASSES = {
    "methods.qlora.batch_size": 3,
    "methods.qlora.grad_accum": 1,
    "methods.qlora.micro_batch_tokens": 64,
}
# Steps of 1 row: rank 1 has none and takes part in the all-reduce with a pass that counts zero.
EMPTY_RANK = {"methods.qlora.batch_size": 1, "methods.qlora.grad_accum": 1}


@pytest.mark.parametrize(
    "method, layout",
    [("qlora", {}), ("galore", {}), ("multi-adapter", {}), ("qlora", UNEVEN_PASSES), ("qlora", EMPTY_RANK)],
    ids=["qlora", "galore", "multi-adapter", "qlora-uneven-passes", "qlora-empty-rank"],
)
def test_two_processes_give_the_one_process_loss_curve(prepared, project, tiny_model_dir, method, layout):
    settings = {
        **layout,
        "train.max_steps": 2,
        **SEVERAL_GPUS,
        "methods.qlora.lora.dropout": 0.0,  # dropout masks differ by process; the rest is deterministic
        "methods.multi-adapter.lora.dropout": 0.0,
        f"methods.{method}.lr": 1e-2,
    }
    curves, counts, weights = {}, {}, {}
    for gpus in (1, 2):
        write_params(
            project, tiny_model_dir, **settings, **{"resources.gpus": gpus, "resources.peak_tflops": PEAK}
        )
        done = stage(project, "ftbench", "train", method)
        assert done.returncode == 0, done.stderr[-2000:]
        curves[gpus] = curve(method)
        weights[gpus] = trained_weights(method)
        result = json.loads((paths.TRAIN / f"{method}.json").read_text())["builtin/seed0"]
        counts[gpus] = {k: result[k] for k in ("tokens", "answer_tokens", "flops")}
        record = json.loads((paths.RESOURCES / f"train-{method}.json").read_text())
        # MFU: the whole world's FLOP/s over the whole world's peak
        assert record["tokens"] == result["tokens"]
        assert record["mfu"] == pytest.approx(
            result["flops"] / record["train_s"] / (gpus * PEAK * 1e12), rel=1e-3
        )
    assert len(curves[1]) == 2 and curves[1][-1] != curves[1][0]
    assert curves[2] == pytest.approx(curves[1], **TOLERANCE)
    # the weights too: a rank that stepped on its own share's gradient (no all-reduce) moves them
    # visibly, even where the loss curve hardly shows it yet
    for name, tensor in weights[1].items():
        torch.testing.assert_close(weights[2][name], tensor, rtol=1e-3, atol=1e-5)
    assert counts[2] == counts[1]  # every rank's tokens, not rank 0's
    assert len(record["per_device"]) == 2 and record["peak_rss_gib_total"] > 0


def trained_weights(method: str) -> dict:
    from ftbench.common import config

    folder = paths.run_dir(method, config.Run("builtin", 0))
    (file,) = folder.glob("*.safetensors")
    return load_file(file)


def test_evaluation_shards_the_test_set_and_gathers_every_answer(prepared, project, tiny_model_dir):
    answers = {}
    for gpus in (1, 2):
        write_params(project, tiny_model_dir, **SEVERAL_GPUS, **{"resources.gpus": gpus})
        done = stage(project, "ftbench", "evaluate", "base")
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [json.loads(x) for x in paths.predictions_file("base", _run()).read_text().splitlines()]
        answers[gpus] = [r["prediction"] for r in rows]
        loss = json.loads((paths.EVAL / "base.json").read_text())["loss"]
        answers[f"loss{gpus}"] = loss
    assert len(answers[2]) == 8 and answers[2] == answers[1]
    assert answers["loss2"] == pytest.approx(answers["loss1"], **TOLERANCE)


def test_layerwise_galore_on_two_processes_is_refused_with_the_fix(prepared, project, tiny_model_dir):
    layerwise = {"methods.galore.galore.layerwise": True, "train.cuda_graphs": False}
    write_params(project, tiny_model_dir, **{"resources.gpus": 2, **layerwise})
    done = stage(project, "ftbench", "train", "qlora")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "galore.layerwise: true needs resources.gpus: 1" in done.stderr
    assert "set it false to train on several GPUs" in done.stderr


def _run():
    from ftbench.common import config

    return config.Run("builtin", None)
