import json
import os
import signal

import pytest
import torch

from ftbench import chat, loss
from ftbench.common import config, paths, tracking
from ftbench.common.errors import UserError
from ftbench.common.resources import Record
from ftbench.loading import load_model, load_tokenizer
from ftbench.recipes import galore, qlora
from ftbench.stages import data, train
from ftbench.training import checkpoint, loop

from .conftest import write_params


def test_micro_batches_are_deterministic_length_grouped_and_cover_every_row():
    rows = [
        {"input_ids": [0] * n, "prompt_len": 1, "id": i} for i, n in enumerate([5, 50, 6, 49, 7, 48, 8, 47])
    ]
    a = loop.micro_batches(rows, 2, seed=0, epoch=0)
    assert a == loop.micro_batches(rows, 2, seed=0, epoch=0)
    assert a != loop.micro_batches(rows, 2, seed=0, epoch=1)
    assert sorted(r["id"] for b in a for r in b) == list(range(8))
    padding = sum(
        max(len(r["input_ids"]) for r in b) * len(b) - sum(len(r["input_ids"]) for r in b) for b in a
    )
    assert padding <= 4  # neighbours in length share a batch


def test_packed_answer_loss_equals_the_model_loss_on_each_row_alone(prepared):
    """One packed pass against HF's own loss per unpadded row (sdpa, logits at every position): packing
    must neither leak attention nor loss across rows, nor shift positions."""
    model = load_model(paths.BASE)
    rows = [json.loads(line) for line in paths.split_file("builtin", "train").read_text().splitlines()][:6]
    reference = 0.0
    for r in rows:
        ids = torch.tensor([r["input_ids"]])
        labels = ids.clone()
        labels[:, : r["prompt_len"]] = chat.IGNORE
        reference += model(input_ids=ids, labels=labels).loss * (len(r["input_ids"]) - r["prompt_len"])
    ours = loss.answer_loss(model, rows)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_optimizer_steps_respect_epochs_accumulation_and_cap(prepared):
    method = prepared.methods["qlora"].model_copy(update={"micro_batch_tokens": None})
    rows = [{"input_ids": [1, 2, 3], "prompt_len": 1}] * 16
    steps = loop.optimizer_steps(rows, method, prepared, seed=0)  # 1 epoch, 4 x 2 in the test params
    assert len(steps) == 2 and all(len(s) == 2 and len(s[0]) == 4 for s in steps)
    one_pass = loop.optimizer_steps(rows, prepared.methods["qlora"], prepared, seed=0)  # its token budget
    assert [[len(m) for m in s] for s in one_pass] == [[8], [8]]
    capped = prepared.model_copy(update={"train": prepared.train.model_copy(update={"max_steps": 1})})
    assert len(loop.optimizer_steps(rows, prepared.methods["qlora"], capped, seed=0)) == 1


@pytest.mark.parametrize("train_embedding", [False, True])
def test_galore_projects_attention_and_mlp_matrices_only(prepared, train_embedding):
    p = prepared
    method = p.methods["galore"]
    method = method.model_copy(
        update={"galore": method.galore.model_copy(update={"train_embedding": train_embedding})}
    )
    model, optimizer, facts = galore.setup(paths.BASE, method, p, seed=0)
    assert facts["projected"] and all((".self_attn." in n or ".mlp." in n) for n in facts["projected"])
    plain = [n for n in facts["not_projected"] if "norm" not in n]
    assert plain == (["model.embed_tokens.weight"] if train_embedding else [])  # a matrix, not projected
    with pytest.raises(RuntimeError, match="GaLore did not project"):
        optimizer.check_projected()


def test_qlora_runs_on_nf4_with_adapters_only(prepared):
    import bitsandbytes as bnb

    model, optimizer, facts = qlora.RECIPE.setup(paths.BASE, prepared.methods["qlora"], prepared, seed=0)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 14 and linear4[0].weight.quant_state.quant_type == "nf4"
    assert all("lora_" in n for n, t in model.named_parameters() if t.requires_grad)
    assert facts["trainable_params"] == sum(t.numel() for g in optimizer.param_groups for t in g["params"])


@pytest.mark.parametrize("method", ["qlora", "galore"])
def test_training_lowers_the_loss_and_records_what_it_did(prepared, project, tiny_model_dir, method, st):
    write_params(project, tiny_model_dir, **{f"methods.{method}.lr": 1e-2, f"methods.{method}.epochs": 4})
    p = config.load()
    result = train.run(method, p, st)["builtin/seed0"]
    assert result["final_loss"] < result["first_loss"]
    assert result["tokens"] > result["answer_tokens"] > 0
    assert (paths.CURVES / method / "builtin-seed0.csv").read_text().startswith("step,loss,lr\n")
    saved = paths.model_dir(method) / "builtin" / "seed0"
    assert (saved / ("adapter_model.safetensors" if method == "qlora" else "model.safetensors")).exists()
    if method == "galore":
        assert result["projected"] and result["not_projected"]
    assert (
        json.loads((paths.TRAIN / f"{method}.json").read_text())["builtin/seed0"]["final_loss"]
        == result["final_loss"]
    )


def test_without_validation_rows_a_model_saved_as_trained_costs_no_check_pass(
    prepared, project, tiny_model_dir, st, monkeypatch
):
    write_params(project, tiny_model_dir, **{"data.sizes.validation": 0})
    data.run(config.load())
    passes = []
    monkeypatch.setattr(train, "mean_loss", lambda *a: passes.append(a) or loss.mean_loss(*a))
    result = train.run("galore", config.load(), st)["builtin/seed0"]
    assert result["val_loss"] is None and passes == []


def test_same_params_give_the_same_loss_curve_on_cpu(prepared, st):
    curve = paths.CURVES / "qlora" / "builtin-seed0.csv"
    train.run("qlora", prepared, st)
    first = curve.read_text()
    train.run("qlora", prepared, st)
    assert curve.read_text() == first


def test_each_training_seed_is_its_own_run(prepared, project, tiny_model_dir, st):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    results = train.run("qlora", config.load(), st)
    assert set(results) == {"builtin/seed0", "builtin/seed1"}
    assert results["builtin/seed0"]["final_loss"] != results["builtin/seed1"]["final_loss"]


def test_a_token_budget_cuts_each_step_into_packed_passes_within_it(prepared):
    rows = [{"input_ids": [0] * n, "prompt_len": 1} for n in (30, 5, 12, 60, 7, 20, 9, 3)] * 2
    method = prepared.methods["qlora"].model_copy(update={"micro_batch_tokens": 64})
    steps = loop.optimizer_steps(rows, method, prepared, seed=0)  # 8 rows a step
    assert all(sum(map(len, s)) == 8 for s in steps)
    assert all(sum(len(r["input_ids"]) for r in m) <= 64 for s in steps for m in s)


def test_token_budget_layout_gives_the_same_losses_as_batch_size_rows(prepared):
    """The cut of a step into forward passes changes no loss: it is normalised per step."""
    from ftbench.common.atomic import read_jsonl

    rows = read_jsonl(paths.split_file("builtin", "train"))
    results = []
    for budget in (None, 4096):
        p = prepared
        method = prepared.methods["galore"].model_copy(update={"micro_batch_tokens": budget})
        steps = loop.optimizer_steps(rows, method, p, seed=0)
        torch.manual_seed(0)
        model, optimizer, _ = galore.setup(paths.BASE, method, p, seed=0)
        trainable = [t for g in optimizer.param_groups for t in g["params"]]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        results.append(
            (
                len(steps[0]),
                [
                    loop.train_step(galore.RECIPE, model, optimizer, scheduler, trainable, s, p)["loss"]
                    for s in steps
                ],
            )
        )
    (passes_plain, plain), (passes_budget, budgeted) = results
    assert passes_plain == 2 and passes_budget == 1
    torch.testing.assert_close(budgeted, plain, rtol=1e-5, atol=1e-6)


def padded_reference_step(model, optimizer, step: list[list[dict]], pad_id: int) -> float:
    """One optimizer step as a stock recipe takes it: right-padded rows, HF's own loss on answer tokens."""
    n_targets = sum(loss.answer_tokens(rows) for rows in step)
    total = 0.0
    for rows in step:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id)
        labels = torch.full((len(rows), width), chat.IGNORE)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = labels[i, :n] = torch.tensor(r["input_ids"])
            labels[i, : r["prompt_len"]] = chat.IGNORE
            mask[i, :n] = 1
        part = model(input_ids=ids, attention_mask=mask, labels=labels).loss * loss.answer_tokens(rows)
        (part / n_targets).backward()
        total += part.item() / n_targets
    torch.nn.utils.clip_grad_norm_([t for t in model.parameters() if t.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return total


def test_packed_training_follows_the_padded_loss_curve(prepared):
    """Packing is a layout, not a change of method: QLoRA's curve packed equals the padded one."""
    from ftbench.common.atomic import read_jsonl

    method = prepared.methods["qlora"]
    method = method.model_copy(update={"lr": 1e-2, "lora": method.lora.model_copy(update={"dropout": 0.0})})
    p = prepared.model_copy(update={"train": prepared.train.model_copy(update={"max_steps": 3})})
    steps = loop.optimizer_steps(read_jsonl(paths.split_file("builtin", "train")), method, p, seed=0)
    curves = []
    for packed in (True, False):
        model, optimizer, _ = qlora.RECIPE.setup(paths.BASE, method, p, seed=0)
        if packed:
            trainable = [t for g in optimizer.param_groups for t in g["params"]]
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
            curves.append(
                [
                    loop.train_step(qlora.RECIPE, model, optimizer, scheduler, trainable, s, p)["loss"]
                    for s in steps
                ]
            )
        else:
            pad = load_tokenizer(paths.BASE).pad_token_id
            curves.append([padded_reference_step(model, optimizer, s, pad) for s in steps])
    assert curves[0][-1] != curves[0][0]  # it learned
    torch.testing.assert_close(curves[0], curves[1], rtol=1e-4, atol=1e-5)


def stage_run(p, stop_after: int | None = None) -> tracking.StageRun:
    """A stage's StageRun; with `stop_after`, the process sends itself SIGTERM at that step's log."""
    run = tracking.StageRun(Record(stage="test"), tracking.Tracker("test", p, {}))
    if stop_after:
        log = run.log_step

        def log_then_stop(step, metrics):
            log(step, metrics)
            if step == stop_after:
                os.kill(os.getpid(), signal.SIGTERM)

        run.log_step = log_then_stop
    return run


def test_a_resumed_run_reports_the_tokens_per_s_of_the_whole_run(prepared, project, tiny_model_dir):
    """Tokens and seconds both count the steps before the checkpoint: no rate inflated by a resume."""
    one_row_steps = {
        "methods.galore.batch_size": 1,
        "methods.galore.grad_accum": 1,
        "train.checkpoint_every_s": 0,
    }
    write_params(project, tiny_model_dir, **one_row_steps)
    p = config.load()
    uninterrupted = stage_run(p)
    train.run("galore", p, uninterrupted)
    with pytest.raises(UserError, match="stopped by signal 15 after step 12/16"):
        train.run("galore", p, stage_run(p, stop_after=12))
    state = torch.load(checkpoint.folder("galore", "builtin/seed0") / checkpoint.FILE, weights_only=True)
    before = state["progress"]["train_s"]  # the stopped attempt's 12 steps
    resumed = stage_run(p)
    train.run("galore", p, resumed)
    record = resumed.record
    assert record["tokens"] == uninterrupted.record["tokens"]
    # the resumed process trained 4 of the 16 steps; its seconds are added to the checkpoint's
    assert record["resumed_train_s"] == round(before, 2) and record["train_s"] > record["resumed_train_s"]
    assert record["tokens_per_s"] == round(record["tokens"] / record["train_s"], 1)


@pytest.mark.parametrize(
    ("name", "hf_name"), [("linear", "linear"), ("cosine", "cosine"), ("constant", "constant_with_warmup")]
)
def test_schedules_are_transformers_own_at_every_step(name, hf_name):
    """loop.schedule gives transformers' get_scheduler learning rates, to the bit, warm-up included."""
    from transformers import get_scheduler

    def lrs(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2e-4)
        scheduler = make(optimizer)
        out = []
        for _ in range(23):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    ours = lrs(lambda o: loop.schedule(name, o, warmup=3, total=20))
    assert ours == lrs(lambda o: get_scheduler(hf_name, o, num_warmup_steps=3, num_training_steps=20))
    assert len(set(ours)) > 2 or name == "constant"
