"""The benchmark command on the tiny model (CPU): its steps, its variants and its markdown."""

import json

import pytest

from ftbench import cli
from ftbench.benchmark import measure, table
from ftbench.common import config
from ftbench.common.errors import UserError
from ftbench.training import loop


def test_steps_are_the_train_stages_own_rows_per_step_and_passes(project):
    p = config.load()  # the tiny params: 4 x 2 rows a step, passes of micro_batch_tokens
    rows = [{"input_ids": [1] * n, "prompt_len": 2} for n in (30, 90, 10, 60, 120, 45, 70, 20) * 2]
    name, q = measure.with_overrides(p, "qlora:micro_batch_tokens=200")
    method = q.methods[name]
    steps = measure.optimizer_steps(rows, method, q, 5)
    # 5 steps need 40 rows: 3 epochs of the 16, cut exactly as the train stage cuts them
    assert steps == loop.optimizer_steps(rows, method.model_copy(update={"epochs": 3}), q, q.seeds[0])[:5]
    assert len(steps) == 5 and all(sum(map(len, s)) == 8 for s in steps)
    assert all(sum(len(r["input_ids"]) for r in m) <= 200 for s in steps for m in s)  # packed passes
    _, fewer = measure.with_overrides(p, "qlora:grad_accum=1")
    assert all(sum(map(len, s)) == 4 for s in measure.optimizer_steps(rows, fewer.methods["qlora"], fewer, 3))


def test_variants_override_params_and_bad_ones_are_one_line_errors(project):
    p = config.load()
    name, q = measure.with_overrides(p, "galore:galore.svd=lowrank,micro_batch_tokens=512")
    method = q.methods["galore"]
    assert name == "galore" and method.galore.svd == "lowrank" and method.micro_batch_tokens == 512
    with pytest.raises(UserError, match="no method 'nope'"):
        measure.with_overrides(p, "nope")
    with pytest.raises(UserError, match=r"methods.galore.galore.svd: Input should be 'full', 'gram' or"):
        measure.with_overrides(p, "galore:galore.svd=fast")


def test_bench_prints_a_line_per_variant_and_keeps_the_prose_of_its_markdown(
    project, gemma_tokenizer_dir, capsys
):
    md = project / "BENCHMARKS.md"
    md.write_text(f"# Ours\n\nintro\n\n{table.START}\nold\n{table.END}\nanalysis\n")
    args = ["--tokenizer", str(gemma_tokenizer_dir), "--shape", "tiny", "--steps", "2", "--warmup", "1"]
    cli.main(["bench", *args, "--markdown", str(md), "qlora", "galore", "qlora:grad_accum=1"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    results = [x for x in lines if "variant" in x]
    assert [r["variant"] for r in results][:3] == ["qlora", "galore", "qlora:grad_accum=1"]
    assert all(r["tokens_per_s"] > 0 for r in results[:3])
    # --steps timed steps after the --warmup ones, of params.yaml's batch_size x grad_accum rows (4 x 2),
    # each row cut at data.max_length
    assert [(r["steps"], r["rows_per_step"]) for r in results[:3]] == [(2, 8), (2, 8), (2, 4)]
    # one packed pass scores its rows as they score alone (fp32 on the CPU: rounding only)
    assert all(r["packed_loss_rel_diff"] < 1e-5 for r in results[:3])
    assert all(0 < r["tokens_per_step"] <= r["rows_per_step"] * 256 for r in results[:3])
    # generation defaults to the evaluate stage's load: data.sizes.test answers of evaluate.max_new_tokens
    assert (results[3]["answers"], results[3]["max_new_tokens"]) == (8, 8)
    assert results[3]["new_tokens_per_s"] > 0
    assert lines[-1]["seed_plan"]["total_minutes"] > 0
    text = md.read_text()
    assert text.startswith("# Ours\n\nintro\n") and text.endswith("analysis\n") and "old" not in text
    assert "Optimizer steps of 8 rows, about " in text and "qlora:grad_accum=1: 4 rows" in text
    assert "| qlora | 8 |" in text and "| galore | 8 |" in text
