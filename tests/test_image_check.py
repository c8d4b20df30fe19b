"""tools/image_check.py's verdict (`make image-check`) on recorded bench output: the first H200 bench
run (its published records, results/2026-11-29-h200-bench-1b-alpaca-padded) passes; a run on the CPU
(tests/data/image_check/cpu-run.jsonl, the script's own bench on the 2-core machine) and H200 runs with
a part of the GPU path missing fail, each naming what is missing."""

import json
import tarfile

from .conftest import ROOT, load_script

image_check = load_script(ROOT / "tools" / "image_check.py")


H200_RUN = ROOT / "results" / "2026-11-29-h200-bench-1b-alpaca-padded" / "records.tgz"
CPU_RUN = ROOT / "tests" / "data" / "image_check" / "cpu-run.jsonl"


def json_lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def h200_run() -> list[dict]:
    """The bench's output of the first H200 run, as its records archive holds it."""
    with tarfile.open(H200_RUN) as records:
        return json_lines(records.extractfile("bench.jsonl").read().decode())


def h200_with(variant: str, **changes) -> list[dict]:
    """The H200 run with one training variant's line changed."""
    return [line | changes if line.get("variant") == variant else line for line in h200_run()]


def test_the_h200_run_passes():
    assert image_check.problems(h200_run()) == []


def test_a_cpu_run_fails_for_the_gpu_liger_and_each_unfused_variant():
    found = image_check.problems(json_lines(CPU_RUN.read_text()))
    assert any("no GPU in the container" in p for p in found), found
    assert any("liger-kernel is not installed" in p for p in found), found
    assert {p.split(":")[0] for p in found if "no fused loss" in p} == {"qlora", "galore"}, found


def test_a_fused_loss_off_the_plain_loss_fails():
    found = image_check.problems(h200_with("galore", fused_loss_rel_diff=0.01))
    assert found == ["galore: fused loss differs from the plain loss by 0.01"]


def test_a_variant_that_errored_fails():
    lines = [{"variant": "qlora", "error": "out of memory (139.1 GiB)"} if x.get("variant") == "qlora" else x
             for x in h200_run()]  # fmt: skip
    assert image_check.problems(lines) == ["qlora: out of memory (139.1 GiB)"]


def test_a_run_that_trained_nothing_fails():
    lines = [x for x in h200_run() if "recipe" not in x]
    assert image_check.problems(lines) == ["the bench trained no variant"]
