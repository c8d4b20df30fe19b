"""tools/image_check.py's verdict (`make image-check`) on recorded bench output: the first H200 bench
run passes; a run on the CPU (tests/data/image_check/cpu-run.jsonl, the script's own bench on the
2-core machine) and H200 runs with a part of the GPU path missing fail, each naming what is missing."""

import importlib.util
import json

from .conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("image_check", ROOT / "tools" / "image_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


image_check = load_script()


def recorded(path: str) -> list[dict]:
    return [json.loads(x) for x in (ROOT / path).read_text().splitlines() if x.startswith("{")]


def h200_with(variant: str, **changes) -> list[dict]:
    """The H200 run with one training variant's line changed."""
    return [
        line | changes if line.get("variant") == variant else line
        for line in recorded("bench/h200-ours.jsonl")
    ]


def test_the_h200_run_passes():
    assert image_check.problems(recorded("bench/h200-ours.jsonl")) == []


def test_a_cpu_run_fails_for_the_gpu_liger_and_each_unfused_variant():
    found = image_check.problems(recorded("tests/data/image_check/cpu-run.jsonl"))
    assert any("no GPU in the container" in p for p in found), found
    assert any("liger-kernel is not installed" in p for p in found), found
    assert {p.split(":")[0] for p in found if "no fused loss" in p} == {"qlora", "galore"}, found


def test_a_fused_loss_off_the_plain_loss_fails():
    found = image_check.problems(h200_with("galore", fused_loss_rel_diff=0.01))
    assert found == ["galore: fused loss differs from the plain loss by 0.01"]


def test_a_variant_that_errored_fails():
    lines = [{"variant": "qlora", "error": "out of memory (139.1 GiB)"} if x.get("variant") == "qlora" else x
             for x in recorded("bench/h200-ours.jsonl")]  # fmt: skip
    assert image_check.problems(lines) == ["qlora: out of memory (139.1 GiB)"]


def test_a_run_that_trained_nothing_fails():
    lines = [x for x in recorded("bench/h200-ours.jsonl") if "recipe" not in x]
    assert image_check.problems(lines) == ["the bench trained no variant"]
