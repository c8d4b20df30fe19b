"""QLoRA: the frozen base in 4-bit NF4 (bitsandbytes) with trainable LoRA adapters (peft)."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ftbench import config
from ftbench.loading import load_nf4


def setup(init: Path, method: config.MethodParams, p: config.Params, seed: int):
    """NF4 base + LoRA on every linear layer but the output head; returns (model, optimizer, facts)."""
    model = load_nf4(init)
    # peft's prepare_model_for_kbit_training would also upcast the 262k-token embedding to fp32
    # (1.2 GB on Gemma-3-1B) for no gain: the base is frozen, so only checkpointing needs input grads.
    if p.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(seed)  # adapter initialisation
    lora = LoraConfig(
        r=method.lora.r,
        lora_alpha=method.lora.alpha,
        lora_dropout=method.lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = [t for t in model.parameters() if t.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable,
        lr=method.lr,
        betas=p.train.betas,
        eps=p.train.eps,
        weight_decay=p.train.weight_decay,
        fused=torch.cuda.is_available(),  # one kernel for all adapters instead of one per tensor
    )
    return model, optimizer, {"trainable_params": sum(t.numel() for t in trainable)}


def load_trained(base: Path, adapter: Path):
    """The model as QLoRA serves it: the NF4 base with the trained adapter on top."""
    return PeftModel.from_pretrained(load_nf4(base), adapter)
