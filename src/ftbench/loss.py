"""Loss on answer tokens, shared by training and evaluation (teacher-forced loss and perplexity)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ftbench import chat
from ftbench.loading import device


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; labels cover the answer tokens only."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), chat.IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n, k = len(r["input_ids"]), r["prompt_len"]
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, k:n] = ids[i, k:n]
        mask[i, :n] = 1
    dev = device()
    return {"input_ids": ids.to(dev), "labels": labels.to(dev), "attention_mask": mask.to(dev)}


def causal_lm(model):
    """The plain *ForCausalLM under a peft wrapper, if any."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens.

    The 262k-token output layer is applied to answer positions only: prompt and padding positions never
    become logits, which is most of the largest tensor in training.
    """
    lm = causal_lm(model)
    hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != chat.IGNORE
    logits = lm.lm_head(hidden[:, :-1][keep]).float()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets[keep], reduction="sum")


def autocast():
    """bf16 autocast on the GPU; the CPU path stays in fp32."""
    if torch.cuda.is_available():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def answer_tokens(rows: list[dict]) -> int:
    """Tokens the loss is taken over: the answer and its end-of-turn token."""
    return sum(len(r["input_ids"]) - r["prompt_len"] for r in rows)


@torch.no_grad()
def mean_loss(model, rows: list[dict], batch_size: int, pad_id: int) -> float | None:
    """Teacher-forced loss per answer token on `rows` (validation)."""
    if not rows:
        return None
    model.eval()
    total = 0.0
    for i in range(0, len(rows), batch_size):
        with autocast():
            total += answer_loss(model, collate(rows[i : i + batch_size], pad_id)).item()
    model.train()
    return total / answer_tokens(rows)
