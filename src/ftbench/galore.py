"""GaLore: full-parameter training whose optimizer state lives in a low-rank gradient projection.

The optimizer is built here rather than through Trainer's `optim="galore_adamw"`, which passes only
the learning rate and silently drops betas, eps and weight decay.
"""

from __future__ import annotations

from pathlib import Path

import torch
from galore_torch import GaLoreAdamW

from ftbench import config
from ftbench.loading import load_model

PROJECTED_MODULES = ("self_attn", "mlp")


def setup(init: Path, method: config.MethodParams, p: config.Params, seed: int):
    """fp32 master weights (bf16 autocast on the GPU) and GaLoreAdamW.

    Returns (model, optimizer, facts to record: which parameters were projected and which were not).
    """
    model = load_model(init, dtype=torch.float32)
    model.get_input_embeddings().weight.requires_grad_(method.galore.train_embedding)
    if p.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not method.galore.train_embedding:
            model.enable_input_require_grads()
    projected, plain = split_parameters(model)
    g = method.galore
    groups = [
        {"params": [t for _, t in plain]},
        {
            "params": [t for _, t in projected],
            "rank": g.rank,
            "update_proj_gap": g.update_proj_gap,
            "scale": g.scale,
            "proj_type": g.proj_type,
        },
    ]
    optimizer = GaLoreAdamW(
        groups,
        lr=method.lr,
        betas=p.train.betas,
        eps=p.train.eps,
        weight_decay=p.train.weight_decay,
        no_deprecation_warning=True,
    )
    facts = {"projected": [n for n, _ in projected], "not_projected": [n for n, _ in plain]}
    return model, optimizer, facts


def split_parameters(model) -> tuple[list, list]:
    """2-D attention and MLP weights go to GaLore; every other trainable tensor to plain AdamW."""
    projected, plain = [], []
    for name, tensor in model.named_parameters():
        if not tensor.requires_grad:
            continue
        is_matrix = tensor.ndim == 2 and any(f".{m}." in name for m in PROJECTED_MODULES)
        (projected if is_matrix else plain).append((name, tensor))
    return projected, plain


def check_projected(optimizer: GaLoreAdamW) -> None:
    """After the first step every projected tensor must hold a projector with its basis."""
    group = next(g for g in optimizer.param_groups if "rank" in g)
    missing = [
        t
        for t in group["params"]
        if getattr(optimizer.state.get(t, {}).get("projector"), "ortho_matrix", None) is None
    ]
    if missing or not group["params"]:
        raise RuntimeError(
            f"GaLore did not project {len(missing)} of {len(group['params'])} matrices after the first step; "
            "check that the model has attention and MLP linear layers"
        )
