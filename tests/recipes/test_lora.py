import bitsandbytes as bnb
import pytest
import torch
from peft.tuners.lora import LoraLayer

from ftbench import recipes
from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.loading import compute_dtype, load_model
from ftbench.loss import mean_loss
from ftbench.recipes.lora import RECIPE as LORA
from ftbench.recipes.qlora import RECIPE as QLORA
from ftbench.stages import evaluate, train
from ftbench.training import loop

from ..conftest import write_params


def adapters(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.named_parameters() if t.requires_grad}


def frozen_base(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.named_parameters() if not t.requires_grad}


def test_lora_is_qlora_without_the_quantization(prepared):
    """The same adapters, initialised alike, on the base's own weights in the compute dtype, frozen."""
    method = prepared.methods["lora"]
    model, optimizer, facts = LORA.setup(paths.BASE, method, prepared, seed=0)
    qlora_model, _, qlora_facts = QLORA.setup(paths.BASE, method, prepared, seed=0)
    assert facts == qlora_facts and facts["trainable_params"] > 0
    ours, theirs = adapters(model), adapters(qlora_model)
    assert ours.keys() == theirs.keys() and all("lora_" in n for n in ours)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    original = load_model(paths.BASE, compute_dtype()).state_dict()
    name = "model.layers.0.mlp.up_proj.weight"
    base_weight = model.get_base_model().get_submodule(name.removesuffix(".weight")).base_layer.weight
    assert base_weight.dtype == compute_dtype() and torch.equal(base_weight, original[name])


def test_lora_lowers_the_loss_and_leaves_the_base_untouched(prepared):
    method = prepared.methods["lora"].model_copy(update={"lr": 1e-2})
    p = prepared.model_copy(update={"train": prepared.train.model_copy(update={"max_steps": 4})})
    model, optimizer, _ = LORA.setup(paths.BASE, method, p, seed=0)
    base, start = frozen_base(model), adapters(model)
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    steps = loop.optimizer_steps(read_jsonl(paths.split_file("builtin", "train")), method, p, seed=0)
    losses = [loop.train_step(LORA, model, optimizer, scheduler, trainable, s, p)["loss"] for s in steps]
    assert losses[-1] < losses[0]
    after = frozen_base(model)
    assert all(torch.equal(base[n], after[n]) for n in base)
    assert any(not torch.equal(start[n], t) for n, t in adapters(model).items())


def test_lora_stage_saves_the_adapter_that_evaluation_scores_merged_into_the_base(
    prepared, project, tiny_model_dir, st
):
    write_params(project, tiny_model_dir, **{"methods.lora.lr": 1e-2, "methods.lora.epochs": 4})
    p = config.load()
    result = train.run("lora", p, st)["builtin/seed0"]
    assert result["final_loss"] < result["first_loss"] and result["recipe"] == "lora"
    run = config.Run("builtin", 0)
    saved = paths.run_dir("lora", run)
    assert (saved / "adapter_model.safetensors").exists() and not (saved / "model.safetensors").exists()
    scored = evaluate.load_for_eval("lora", run, p)
    assert not any(isinstance(m, (LoraLayer, bnb.nn.Linear4bit)) for m in scored.modules())  # merged
    rows = read_jsonl(paths.split_file("builtin", "validation"))
    val = mean_loss(scored, rows, p.train.fused_cross_entropy)
    assert val == pytest.approx(result["val_loss"], rel=1e-5)  # the model trained, as saved and loaded
    assert evaluate.scored_form("lora", p) == "merged-float32"  # the CPU's compute dtype
    assert recipes.get("lora") is LORA
