import pytest
import torch

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.common.errors import UserError
from ftbench.loading import load_model
from ftbench.recipes.full import RECIPE as FULL
from ftbench.stages import evaluate, train
from ftbench.training import loop

from ..conftest import write_params
from ..test_train import stage_run


def test_full_trains_and_moves_every_parameter(prepared):
    method = prepared.methods["full"]
    p = prepared.model_copy(update={"train": prepared.train.model_copy(update={"max_steps": 1})})
    model, optimizer, facts = FULL.setup(paths.BASE, method, p, seed=0)
    params = list(model.parameters())
    in_optimizer = {id(t) for g in optimizer.param_groups for t in g["params"]}
    assert all(t.requires_grad for t in params) and in_optimizer == {id(t) for t in params}
    assert facts["trainable_params"] == sum(t.numel() for t in params)
    assert optimizer.defaults["fused"] == torch.cuda.is_available()  # fused AdamW on a GPU
    before = [t.detach().clone() for t in params]
    steps = loop.optimizer_steps(read_jsonl(paths.split_file("builtin", "train")), method, p, seed=0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loop.train_step(FULL, model, optimizer, scheduler, params, steps[0], p)
    assert all(not torch.equal(b, t) for b, t in zip(before, params, strict=True))


def test_full_resumes_from_a_checkpoint_to_the_uninterrupted_curve(prepared, project, tiny_model_dir):
    """Weights, AdamW's moments, schedule and RNG go through the generic checkpoint and come back."""
    write_params(
        project,
        tiny_model_dir,
        **{
            "methods.full.batch_size": 1,
            "methods.full.grad_accum": 1,
            "methods.full.lr": 1e-3,
            "train.checkpoint_every_s": 0,
            "train.log_every": 1,
        },
    )
    p = config.load()
    curve = paths.CURVES / "full" / "builtin-seed0.csv"
    train.run("full", p, stage_run(p))
    uninterrupted = curve.read_text()
    with pytest.raises(UserError, match="stopped by signal 15 after step 5/16"):
        train.run("full", p, stage_run(p, stop_after=5))
    train.run("full", p, stage_run(p))
    assert curve.read_text() == uninterrupted
    saved = paths.run_dir("full", config.Run("builtin", 0))
    assert (saved / "model.safetensors").exists() and (saved / "tokenizer.json").exists()
    scored, base = evaluate.load_for_eval("full", config.Run("builtin", 0), p), load_model(paths.BASE)
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(scored.state_dict()[name], base.state_dict()[name])  # the trained weights
