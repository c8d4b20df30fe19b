"""GaLore's speed and memory options against the stock galore-torch optimizer, on the tiny model (CPU)."""

import pytest
import torch

from ftbench import optim
from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.loss import answer_loss, answer_tokens
from ftbench.recipes import full, galore
from ftbench.training import loop


def stock_optimizer(optimizer) -> optim.GaLoreAdamW:
    """galore-torch's own GaLoreAdamW over the same groups and settings; it builds galore-torch's own
    projectors at its first step, so the reference is galore-torch alone."""
    return optim.GaLoreAdamW([dict(g) for g in optimizer.param_groups], no_deprecation_warning=True)


def galore_losses(p, rows_per_step: list[list[int]], **galore_options) -> list[float]:
    """Per-step losses of the galore recipe, with clipping off and a constant learning rate of 1e-2
    (large enough that a wrong basis shows in the losses)."""
    method = p.methods["galore"]
    galore_settings = method.galore.model_copy(update=galore_options)
    method = method.model_copy(
        update={"lr": 1e-2, "galore": config.GaloreParams(**galore_settings.model_dump())}
    )
    p = p.model_copy(update={"train": p.train.model_copy(update={"max_grad_norm": 0.0})})
    rows = read_jsonl(paths.split_file("builtin", "train"))
    torch.manual_seed(0)
    model, optimizer, _ = galore.setup(paths.BASE, method, p, seed=0)
    recipe = galore.RECIPE
    if not method.galore.layerwise:  # galore-torch alone, driven by the hooks of a stock torch optimizer
        optimizer, recipe = stock_optimizer(optimizer), full.RECIPE
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    steps = [[[rows[i] for i in micro] for micro in step] for step in rows_per_step]
    return [loop.train_step(recipe, model, optimizer, scheduler, trainable, s, p)["loss"] for s in steps]


# step 1 is one micro-batch (the projection basis comes from it either way); then two per step
ACCUMULATED = [[[0, 1, 2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]], [[12, 13], [14, 15]], [[0, 2], [4, 6]]]


@pytest.mark.parametrize("accumulation", ["full", "projected"])
def test_layerwise_accumulation_matches_stock_galore(prepared, accumulation):
    """Projected gradients summed over micro-batches equal the projection of the summed gradient."""
    stock = galore_losses(prepared, ACCUMULATED, layerwise=False)
    ours = galore_losses(prepared, ACCUMULATED, layerwise=True, accumulation=accumulation)
    assert stock[-1] != stock[0]  # the optimizer moved the weights
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("accumulation", ["full", "projected"])
def test_layerwise_refreshes_the_projection_like_stock_galore(prepared, accumulation):
    one_micro_batch = [[[i, i + 1, i + 2, i + 3]] for i in range(0, 16, 4)]
    stock = galore_losses(prepared, one_micro_batch, layerwise=False, update_proj_gap=2)
    ours = galore_losses(
        prepared, one_micro_batch, layerwise=True, update_proj_gap=2, accumulation=accumulation
    )
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


# 6 steps of 3 passes; with update_proj_gap 2, steps 1, 3 and 5 refresh the bases
CLIPPED_RUN = [[[j, j + 1] for j in range(i, i + 6, 2)] for i in (0, 6, 10, 3, 9, 1)]
MAX_NORM = 0.05


def stock_galore_run(p, method, steps) -> tuple[list[float], list[float], torch.nn.Module]:
    """galore-torch's GaLoreAdamW as HF Trainer drives it: backward per pass, clip_grad_norm_, step."""
    method = method.model_copy(update={"galore": method.galore.model_copy(update={"layerwise": False})})
    torch.manual_seed(0)
    model, optimizer, _ = galore.setup(paths.BASE, method, p, seed=0)
    optimizer = stock_optimizer(optimizer)
    params = [t for g in optimizer.param_groups for t in g["params"]]
    losses, norms = [], []
    for step in steps:
        n_targets = sum(answer_tokens(rows) for rows in step)
        loss = 0.0
        for rows in step:
            pass_loss = answer_loss(model, rows) / n_targets
            pass_loss.backward()
            loss += pass_loss.item()
        norms.append(torch.nn.utils.clip_grad_norm_(params, MAX_NORM).item())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss)
    return losses, norms, model


@pytest.mark.parametrize("layerwise", [False, True])
def test_default_galore_is_published_galore_with_accumulation_refreshes_and_clipping(prepared, layerwise):
    """ftbench's default GaLore (and its layerwise form) takes the same steps as the stock optimizer
    after clip_grad_norm_ of the full gradient, on refresh steps of several passes too."""
    rows = read_jsonl(paths.split_file("builtin", "train"))
    steps = [[[rows[i] for i in rows_] for rows_ in step] for step in CLIPPED_RUN]
    method = prepared.methods["galore"]
    assert method.galore.svd == "full" and not method.galore.layerwise  # the defaults
    galore_settings = method.galore.model_copy(update={"update_proj_gap": 2, "layerwise": layerwise})
    method = method.model_copy(update={"lr": 3e-3, "galore": galore_settings})
    p = prepared.model_copy(update={"train": prepared.train.model_copy(update={"max_grad_norm": MAX_NORM})})
    stock_losses, stock_norms, stock_model = stock_galore_run(p, method, steps)

    torch.manual_seed(0)
    model, optimizer, _ = galore.setup(paths.BASE, method, p, seed=0)
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    logged = [loop.train_step(galore.RECIPE, model, optimizer, scheduler, trainable, s, p) for s in steps]

    assert min(stock_norms) > MAX_NORM  # every step clips
    torch.testing.assert_close([m["grad_norm"] for m in logged], stock_norms, rtol=1e-4, atol=0)
    torch.testing.assert_close([m["loss"] for m in logged], stock_losses, rtol=1e-4, atol=0)
    torch.testing.assert_close(
        dict(model.named_parameters()), dict(stock_model.named_parameters()), rtol=1e-4, atol=1e-5
    )


def test_only_the_projected_accumulation_is_reported_as_a_deviation(prepared):
    method = prepared.methods["galore"]
    assert method.deviations() == [] and prepared.methods["qlora"].deviations() == []
    projected = method.galore.model_copy(update={"accumulation": "projected", "layerwise": True})
    (sentence,) = method.model_copy(update={"galore": projected}).deviations()
    assert "accumulation: projected" in sentence and "clipping" in sentence
    stock = projected.model_copy(update={"layerwise": False})  # the stock optimizer ignores the setting
    assert method.model_copy(update={"galore": stock}).deviations() == []


def test_layerwise_frees_every_projected_gradient_during_backward(prepared):
    method = prepared.methods["galore"]
    method = method.model_copy(update={"galore": method.galore.model_copy(update={"layerwise": True})})
    model, optimizer, _ = galore.setup(paths.BASE, method, prepared, seed=0)
    rows = read_jsonl(paths.split_file("builtin", "train"))[:2]
    answer_loss(model, rows).backward()
    projected = [t for g in optimizer.param_groups if "rank" in g for t in g["params"]]
    assert projected and all(t.grad is None for t in projected)
    assert all(optimizer.state[t]["low_grad"].shape != t.shape for t in projected)


@pytest.mark.parametrize("svd", ["lowrank", "gram"])
@pytest.mark.parametrize("tall", [True, False])
def test_faster_svds_find_the_same_subspace_as_full_svd(svd, tall):
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(256, 256))
    v, _ = torch.linalg.qr(torch.randn(64, 64))
    spectrum = torch.cat([torch.linspace(10, 5, 16), torch.full((48,), 1e-3)])
    grad = u[:, :64] @ torch.diag(spectrum) @ v.T  # 256 x 64: GaLore projects the right side
    grad = grad if tall else grad.T  # 64 x 256: the left side
    bases, subspaces = {}, {}
    for kind in ("full", svd):
        proj = optim.Projector(16, 200, 0.25, "std", svd=kind)
        proj.project(grad, 0)
        bases[kind] = basis = proj.ortho_matrix
        subspaces[kind] = basis.T @ basis if tall else basis @ basis.T  # projector onto the kept subspace
    torch.testing.assert_close(subspaces[svd], subspaces["full"], atol=1e-4, rtol=0)
    assert not torch.equal(bases[svd], bases["full"])  # another algorithm did find it


@pytest.mark.parametrize("type", ["left", "right", "full"])
def test_the_gram_basis_is_the_svds_on_either_side_up_to_sign(type):
    torch.manual_seed(0)
    grad = torch.randn(48, 20)
    u, _, vh = (t.float() for t in torch.linalg.svd(grad.double(), full_matrices=False))
    for g, (left, right) in ((grad, (u[:, :8], vh[:8])), (grad.T, (vh[:8].T, u[:, :8].T))):
        got = optim._gram_basis(g, 8, type)
        want = {"left": left, "right": right, "full": [left, right]}[type]
        for a, b in zip(got if type == "full" else [got], want if type == "full" else [want], strict=True):
            torch.testing.assert_close(a.abs(), b.abs(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layerwise", [False, True])
def test_clipping_caps_the_norm_the_optimizer_sees(prepared, layerwise):
    method = prepared.methods["galore"]
    method = method.model_copy(update={"galore": method.galore.model_copy(update={"layerwise": layerwise})})
    model, optimizer, _ = galore.setup(paths.BASE, method, prepared, seed=0)
    rows = read_jsonl(paths.split_file("builtin", "train"))[:4]
    (answer_loss(model, rows) * 100).backward()
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    before = galore.RECIPE.clip(optimizer, trainable, 1.0)
    after = galore.RECIPE.clip(optimizer, trainable, 1.0)
    assert before > 1.0 and after == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(("proj_type", "streams"), [("std", 3), ("reverse_std", 3), ("full", 3), ("std", 1)])
def test_the_batched_update_is_galore_torchs_to_the_bit(monkeypatch, proj_type, streams):
    """BatchedGaLoreAdamW (the default) against galore-torch's GaLoreAdamW: the same weights, moments and
    bases, bit for bit, over steps that refresh the bases (side by side in `streams` threads, or with one
    in project() as galore-torch does) and with chunks of a few tensors each; weight decay and the plain
    (unprojected) group included."""
    monkeypatch.setattr(optim, "UPDATE_CHUNK_ELEMENTS", 100)  # 2-3 chunks a group
    monkeypatch.setattr(optim, "_side_by_side", lambda: True)  # the GPU's threads, without streams
    torch.manual_seed(0)
    shapes = [(12, 8), (8, 12), (16, 16), (9, 20)]
    weights = [torch.randn(s) for s in shapes], [torch.randn(7), torch.randn(3, 1)]
    settings = {"rank": 4, "update_proj_gap": 2, "scale": 0.25, "proj_type": proj_type}
    copies, optimizers = [], []
    for kind in (optim.GaLoreAdamW, optim.BatchedGaLoreAdamW):
        matrices, plain = ([w.clone().requires_grad_() for w in ws] for ws in weights)
        groups = [{"params": plain}, {"params": matrices, **settings, "refresh_streams": streams}]
        optimizer = kind(groups, lr=1e-2, weight_decay=0.1, no_deprecation_warning=True)
        if kind is optim.BatchedGaLoreAdamW:
            for t in matrices:
                optimizer.state[t]["projector"] = optim.Projector(**settings)
        copies.append(matrices + plain)
        optimizers.append(optimizer)
    for _ in range(5):
        grads = [torch.randn_like(t) for t in copies[0]]
        for tensors, optimizer in zip(copies, optimizers, strict=True):
            for t, g in zip(tensors, grads, strict=True):
                t.grad = g.clone()
            optimizer.step()
    stock, batched = optimizers
    for a, b in zip(*copies, strict=True):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(stock.state[a][key]), torch.as_tensor(batched.state[b][key]))
    for a, b in zip(copies[0][:4], copies[1][:4], strict=True):
        want, got = stock.state[a]["projector"].ortho_matrix, batched.state[b]["projector"].ortho_matrix
        for x, y in zip(*(m if proj_type == "full" else [m] for m in (want, got)), strict=True):
            assert torch.equal(x, y)
        # step 4 refreshed in refresh_bases, ahead of the update's projection (one stream: in project())
        assert batched.state[b]["projector"].refreshed_at == (4 if streams > 1 else None)
