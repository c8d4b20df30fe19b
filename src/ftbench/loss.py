"""Loss on answer tokens, shared by training and evaluation (teacher-forced loss and perplexity)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util

import torch
import torch.nn.functional as F

from ftbench import packing
from ftbench.common import distributed
from ftbench.common.errors import UserError
from ftbench.loading import device
from ftbench.packing import causal_lm, pack

# Answer positions whose logits exist at once (the output layer and loss, chunk by chunk). The chunk is
# taken when every activation of the pass is held, so it adds to training's peak: on Gemma 3's 262k
# vocabulary 256 positions are 128 MiB of bf16 logits (1024 were 512 MiB), and a 256 x 1152 x 262k matmul
# still fills an H200 (155 GFLOP a chunk).
FUSED_CHUNK_TOKENS = 256
# Tokens a pass of a loss without gradients (validation, test loss, merge checks) packs. It keeps no
# activations, so its memory is one layer's intermediates (an estimated 45 KB a token on the 1B shape)
# and one chunk of logits; eager passes are launch-bound, so few and full. On the H200 (1B shape): 4-row
# passes took 9-10 s of a train stage's validation, 8,192-token passes 1-1.4 s; all 200 validation rows
# in one pass raised GaLore's stage peak to 20.8 GiB NVML, 16.97 in 8,192-token passes.
LOSS_PASS_TOKENS = 8192


def answer_loss(model, rows: list[dict], fused: bool = False, passes=None) -> torch.Tensor:
    """Summed next-token cross-entropy over the answer tokens of `rows`, in one packed forward pass.

    The 262k-token output layer is applied to answer positions only: prompt positions never become
    logits, which is most of the largest tensor in training. `fused` (GPU and liger-kernel only) goes
    further: liger computes the output layer and the loss chunk by chunk, so even the answer positions'
    logits (4 GB in fp32 for 4,096 tokens) never exist at once. The model is switched to packed
    attention for good (see packing.use); `mean_loss` switches it back. A training pass runs the decoder
    as its run's `passes` (ftbench.training.loop.Passes) say: replayed CUDA graphs, or DDP's wrapper.
    """
    packing.use(model)  # packed rows through sdpa would attend across rows
    lm = causal_lm(model)
    # the output head is applied outside the decoder, to answer positions only
    graphed = passes.graphs if passes is not None and model.training and torch.is_grad_enabled() else None
    if graphed is not None:
        static = graphed.shape(rows)
        batch = pack(rows, device(), static)
        hidden = graphed(batch, static)
    else:
        batch = pack(rows, device())
        decoder = passes.ddp if passes is not None and passes.ddp is not None else lm.model
        hidden = decoder(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], **batch["attention"]
        ).last_hidden_state
    hidden, targets = hidden[0, batch["scored"]], batch["targets"]
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if fused and liger_available():
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        weight = lm.lm_head.weight.to(torch.bfloat16)
        # liger's default chunk bounds the logits to the size of `hidden`: with a 262k vocabulary that is
        # 16-token chunks, hundreds of small launches (measured 2x slower than no fusion on the H200).
        # This sets chunks of about FUSED_CHUNK_TOKENS instead.
        budget = max(1, weight.shape[0] * FUSED_CHUNK_TOKENS // (weight.shape[1] * max(1, len(targets))))
        return liger_fused_linear_cross_entropy(
            hidden.to(torch.bfloat16), weight, targets, reduction="sum", softcap=cap, chunk_mem_const=budget
        )
    if torch.is_grad_enabled():
        return _plain_loss(lm, hidden, targets, cap)
    # no backward to keep the logits for: one chunk of them at a time
    total = torch.zeros((), device=hidden.device)
    for i in range(0, len(targets), FUSED_CHUNK_TOKENS):
        total += _plain_loss(lm, hidden[i : i + FUSED_CHUNK_TOKENS], targets[i : i + FUSED_CHUNK_TOKENS], cap)
    return total


def _plain_loss(lm, hidden: torch.Tensor, targets: torch.Tensor, cap: float | None) -> torch.Tensor:
    """The output layer and summed cross-entropy, every logit at once (fp32)."""
    logits = lm.lm_head(hidden).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets, reduction="sum")


@functools.cache
def liger_available() -> bool:
    """liger-kernel's Triton kernels need a CUDA GPU; it is an optional dependency (the `gpu` extra)."""
    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def autocast():
    """bf16 autocast on the GPU; the CPU path stays in fp32."""
    if torch.cuda.is_available():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def answer_tokens(rows: list[dict]) -> int:
    """Tokens the loss is taken over: the answer and its end-of-turn token."""
    return sum(len(r["input_ids"]) - r["prompt_len"] for r in rows)


@torch.no_grad()
def mean_loss(model, rows: list[dict], fused: bool = False) -> float | None:
    """Teacher-forced loss per answer token on `rows` (validation and test), in passes of at most
    LOSS_PASS_TOKENS tokens."""
    if not rows:
        return None
    model.eval()
    total, mine = 0.0, distributed.shard(rows)
    with packing.attention(model):
        for batch in packing.passes(mine, LOSS_PASS_TOKENS):
            with autocast():
                total += answer_loss(model, batch, fused).item()
    model.train()
    (total,) = distributed.sum_scalars(total)
    return total / answer_tokens(rows)


# The relative tolerance of every continuity check: a merged model (QLoRA's adapter in its dequantized
# NF4 weights, evaluate; the multi-adapter hybrid's adapters in its trained weights, train) against the
# form it was trained in, their losses on the same rows. In fp32 (CPU) they agree to 1e-5 (the tests' tiny
# model: the same weights up to the fp32 rounding of W + BA). On a GPU the merged weights are rounded to
# bf16 once, where the trained form adds the adapter's output separately: about bf16's half step (0.2%)
# per weight, random, which moves the loss by a few tenths of a percent at most. Measured on the H200
# (results/2026-11-30-h200-gsm8k-270m-3seeds-9models, Gemma 3 270M): 0.002-0.13% for merged QLoRA, 0.08%
# for the multi-adapter merge. 1% leaves room for that, while a lost, doubled or misplaced adapter moves a
# trained model's loss by far more.
CONTINUITY_RTOL = 0.01


def continuity(
    trained_loss: float,
    merged_loss: float,
    tolerance: float,
    *,
    where: str,
    trained_form: str,
    fix: str,
    trained_key: str = "trained_loss",
) -> dict:
    """The check that a merged model computes what the form it was trained in computes: their losses on
    the same check rows within a relative `tolerance`. Within it, the facts for metrics (`trained_key`:
    the trained form's loss); beyond it, a UserError: `where` (the merge, the rows), the merged model's
    loss against `trained_form`'s, and the `fix`."""
    difference = abs(merged_loss - trained_loss) / trained_loss
    if difference > tolerance:
        raise UserError(
            f"{where}: the merged model's loss {merged_loss:.4f} is not {trained_form}'s {trained_loss:.4f} "
            f"(off by {difference:.2%}, tolerance {tolerance:.0%}); {fix}"
        )
    return {
        trained_key: trained_loss,
        "merged_loss": merged_loss,
        "relative_difference": difference,
        "tolerance": tolerance,
    }
