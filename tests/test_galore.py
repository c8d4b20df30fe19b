"""GaLore's speed and memory options against the stock galore-torch optimizer, on the tiny model (CPU)."""

import pytest
import torch

from ftbench import galore, paths, train
from ftbench.atomic import read_jsonl


def galore_losses(p, rows_per_step: list[list[int]], **galore_options) -> list[float]:
    """Per-step losses of the galore recipe, with clipping off and a constant learning rate."""
    method = p.methods["galore"]
    method = method.model_copy(update={"galore": method.galore.model_copy(update=galore_options)})
    p = p.model_copy(update={"train": p.train.model_copy(update={"max_grad_norm": 0.0})})
    rows = read_jsonl(paths.split_file("builtin", "train"))
    torch.manual_seed(0)
    model, optimizer, _ = galore.setup(paths.BASE, method, p, seed=0)
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    steps = [[[rows[i] for i in micro] for micro in step] for step in rows_per_step]
    return [train.train_step(model, optimizer, scheduler, trainable, s, p, 0)["loss"] for s in steps]


# step 1 is one micro-batch (the projection basis comes from it either way); then two per step
ACCUMULATED = [[[0, 1, 2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]], [[12, 13], [14, 15]], [[0, 2], [4, 6]]]


def test_layerwise_accumulation_matches_stock_galore(prepared):
    """Projected gradients summed over micro-batches equal the projection of the summed gradient."""
    stock = galore_losses(prepared, ACCUMULATED, layerwise=False, lr=1e-2)
    ours = galore_losses(prepared, ACCUMULATED, layerwise=True, lr=1e-2)
    assert stock[-1] != stock[0]  # the optimizer moved the weights
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


def test_layerwise_refreshes_the_projection_like_stock_galore(prepared):
    one_micro_batch = [[[i, i + 1, i + 2, i + 3]] for i in range(0, 16, 4)]
    stock = galore_losses(prepared, one_micro_batch, layerwise=False, update_proj_gap=2)
    ours = galore_losses(prepared, one_micro_batch, layerwise=True, update_proj_gap=2)
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


def test_layerwise_frees_every_projected_gradient_during_backward(prepared):
    model, optimizer, _ = galore.setup(paths.BASE, prepared.methods["galore"], prepared, seed=0)
    rows = read_jsonl(paths.split_file("builtin", "train"))[:2]
    from ftbench.loss import answer_loss, collate

    answer_loss(model, collate(rows, 0)).backward()
    projected = [t for g in optimizer.param_groups if "rank" in g for t in g["params"]]
    assert projected and all(t.grad is None for t in projected)
    assert all(optimizer.state[t]["low_grad"].shape != t.shape for t in projected)


def test_lowrank_svd_finds_the_same_subspace_as_full_svd():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(256, 256))
    v, _ = torch.linalg.qr(torch.randn(64, 64))
    spectrum = torch.cat([torch.linspace(10, 5, 16), torch.full((48,), 1e-3)])
    grad = u[:, :64] @ torch.diag(spectrum) @ v.T  # 256 x 64: GaLore projects the right side
    bases = {}
    for svd in ("full", "lowrank"):
        proj = galore.Projector(16, 200, 0.25, "std", svd=svd)
        proj.project(grad, 0)
        bases[svd] = proj.ortho_matrix.T @ proj.ortho_matrix  # projector onto the kept subspace
    torch.testing.assert_close(bases["lowrank"], bases["full"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("layerwise", [False, True])
def test_clipping_caps_the_norm_the_optimizer_sees(prepared, layerwise):
    method = prepared.methods["galore"]
    method = method.model_copy(update={"galore": method.galore.model_copy(update={"layerwise": layerwise})})
    model, optimizer, _ = galore.setup(paths.BASE, method, prepared, seed=0)
    from ftbench.loss import answer_loss, collate

    rows = read_jsonl(paths.split_file("builtin", "train"))[:4]
    (answer_loss(model, collate(rows, 0)) * 100).backward()
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    before = galore.clip_gradients(optimizer, trainable, 1.0)
    after = galore.clip_gradients(optimizer, trainable, 1.0)
    assert before > 1.0 and after == pytest.approx(1.0, rel=1e-4)
