"""The benchmark command on the tiny model (CPU): its steps, its variants and its markdown."""

import json

import pytest

from ftbench import bench, cli, config
from ftbench.errors import UserError


def test_token_steps_fill_each_step_up_to_the_budget_deterministically():
    rows = [{"input_ids": [0] * n} for n in (100, 300, 50, 200, 120)]
    steps = bench.token_steps(rows, 4, tokens=400)
    assert len(steps) == 4 and steps == bench.token_steps(rows, 4, tokens=400)
    used = [sum(len(r["input_ids"]) for r in s) for s in steps]
    assert all(0 < u <= 400 for u in used)
    # full: a step ends only at the row that would not fit, which opens the next step
    assert all(u + len(after[0]["input_ids"]) > 400 for u, after in zip(used, steps[1:], strict=False))


def test_variants_override_params_and_bad_ones_are_one_line_errors(project):
    p = config.load()
    name, q = bench.with_overrides(p, "galore:galore.svd=lowrank,train.micro_batch_tokens=512")
    assert (
        name == "galore" and q.methods["galore"].galore.svd == "lowrank" and q.train.micro_batch_tokens == 512
    )
    with pytest.raises(UserError, match="no method 'nope'"):
        bench.with_overrides(p, "nope")
    with pytest.raises(UserError, match=r"methods.galore.galore.svd: Input should be 'full' or 'lowrank'"):
        bench.with_overrides(p, "galore:galore.svd=fast")


def test_bench_prints_a_line_per_variant_and_keeps_the_prose_of_its_markdown(
    project, gemma_tokenizer_dir, capsys
):
    md = project / "BENCHMARKS.md"
    md.write_text(f"# Ours\n\nintro\n\n{bench.START}\nold\n{bench.END}\nanalysis\n")
    args = ["--tokenizer", str(gemma_tokenizer_dir), "--shape", "tiny", "--steps", "2", "--warmup", "1"]
    args += [
        "--tokens-per-step",
        "512",
        "--eval-answers",
        "4",
        "--eval-new-tokens",
        "4",
        "--markdown",
        str(md),
    ]
    cli.main(["bench", *args, "qlora", "galore"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    results = [x for x in lines if "variant" in x]
    assert [r["variant"] for r in results][:2] == ["qlora", "galore"]
    assert all(r["tokens_per_s"] > 0 for r in results[:2])
    # --steps timed steps after the --warmup ones, each within --tokens-per-step
    assert all(r["steps"] == 2 and 0 < r["tokens_per_step"] <= 512 for r in results[:2])
    assert results[2]["answers"] == 4 and results[2]["new_tokens_per_s"] > 0
    assert lines[-1]["seed_plan"]["total_minutes"] > 0
    text = md.read_text()
    assert text.startswith("# Ours\n\nintro\n") and text.endswith("analysis\n") and "old" not in text
    assert "| qlora |" in text and "| galore |" in text


def test_cli_names_its_commands(capsys):
    with pytest.raises(SystemExit) as code:
        cli.main(["nope"])
    assert code.value.code == 2 and "ftbench {model,data,train" in capsys.readouterr().err
