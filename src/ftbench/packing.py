"""Padding-free forward passes: a pass's rows laid end to end in one row, each attending only to itself.

Rows of real instruction data differ in length by 10x or more; padded to the longest, a third of the
tokens fed to the GPU were padding (30-41% at Alpaca lengths), and a step of short rows became several
small launch-bound passes. Packed, a pass has no padding and one row of shape [1, T]:
- position ids restart at 0 for each row, so rotary embeddings are those of the row alone;
- attention is per row (block-diagonal causal) through the `ftbench_packed` attention function, which
  transformers calls in place of sdpa: on a GPU FlashAttention-2's variable-length kernel inside torch
  (`torch.nn.attention.varlen.varlen_attn`, no flash-attn package needed), on the CPU sdpa row by row;
- a row's first token has no label (its prompt starts it), so no loss crosses from one row into the next.

transformers builds no attention mask for an attention function it has no mask function for, so no
[T, T] mask is ever made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ftbench import chat

ATTENTION = "ftbench_packed"
PAD_ID = 0  # Gemma's <pad>: the filler rows of a fixed-shape pass; they carry no labels


@dataclasses.dataclass(frozen=True)
class Static:
    """A fixed pass shape, which a CUDA graph needs (ftbench.training.graphs): `tokens` tokens in `rows` rows,
    the pass's own rows followed by filler rows of at least one token each."""

    tokens: int
    rows: int


def pack(rows: list[dict], device: torch.device, static: Static | None = None) -> dict:
    """One packed row from `rows`: ids, per-row positions, labels on answer tokens, and the row bounds the
    attention needs. Everything is built on the CPU and copied once: the loss never syncs with the GPU
    to find its answer positions. With `static`, filler rows pad the pass to that shape."""
    lengths = [len(r["input_ids"]) for r in rows]
    filler = _filler_lengths(sum(lengths), len(rows), static) if static else []
    starts = list(itertools.accumulate(lengths + filler, initial=0))
    ids = torch.tensor([t for r in rows for t in r["input_ids"]] + [PAD_ID] * sum(filler), dtype=torch.long)
    positions = torch.cat([torch.arange(n) for n in lengths + filler])
    labels = torch.full_like(ids, chat.IGNORE)
    for r, start, end in zip(rows, starts, starts[1:], strict=False):  # filler rows get no labels
        # max(.., 1): a row's first token is never a target, so the last token of the row before it
        # never learns to predict it
        first = start + max(r["prompt_len"], 1)
        labels[first:end] = ids[first:end]
    # the loss is taken at positions whose next token is an answer token
    scored = torch.nonzero(labels[1:] != chat.IGNORE).squeeze(1)
    bounds = torch.tensor(starts, dtype=torch.int32).to(device)  # one copy, read by queries and keys
    return {
        "input_ids": ids[None].to(device),
        "position_ids": positions[None].to(device),
        "scored": scored.to(device),
        "targets": labels[1:][scored].to(device),
        # transformers passes these keyword arguments through to the attention function
        "attention": {
            "cu_seq_lens_q": bounds,
            "cu_seq_lens_k": bounds,
            # a graph replays the kernels' launch arguments: under `static` the bound is fixed
            "max_length_q": static.tokens if static else max(lengths),
            "max_length_k": static.tokens if static else max(lengths),
        },
    }


def passes(rows: list[dict], budget: int) -> list[list[dict]]:
    """`rows` cut into packed forward passes of at most `budget` tokens, longest first: a few full passes
    keep the GPU busy where many short ones would leave it waiting on launches. A row longer than the
    budget gets a pass of its own."""
    out: list[list[dict]] = []
    used = budget  # no pass open yet
    for r in sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True):
        n = len(r["input_ids"])
        if used + n > budget:
            out.append([])
            used = 0
        out[-1].append(r)
        used += n
    return out


def _filler_lengths(used: int, n_rows: int, static: Static) -> list[int]:
    """Lengths of the filler rows that pad `n_rows` rows of `used` tokens to `static`: one long row and
    the rest a token each. No row is empty, so no attention kernel sees a zero-length row."""
    rows, tokens = static.rows - n_rows, static.tokens - used
    if rows < 1 or tokens < rows:
        raise ValueError(f"{n_rows} rows of {used} tokens do not fit the pass shape {static}")
    return [tokens - rows + 1] + [1] * (rows - 1)


def use(model) -> None:
    """Switch a model to packed attention for good (the loss does, on its first pass): a model that
    trains keeps it, because activation checkpointing reruns the forward pass during backward, and that
    rerun must see the same attention."""
    lm = causal_lm(model)
    if lm.config._attn_implementation != ATTENTION:
        lm.set_attn_implementation(ATTENTION)


@contextlib.contextmanager
def attention(model):
    """Packed attention for the loss passes of a model that otherwise generates (with sdpa)."""
    lm = causal_lm(model)
    before = lm.config._attn_implementation
    use(model)
    try:
        yield
    finally:
        lm.set_attn_implementation(before)


def causal_lm(model):
    """The plain *ForCausalLM under a peft wrapper, if any."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def packed_attention(module, query, key, value, attention_mask, scaling=None, sliding_window=None, **kwargs):
    """transformers' attention-function signature: query [1, H, T, D], key/value [1, Hkv, T, D]; returns
    ([1, T, H, D], None). Dropout is ignored: Gemma 3 has none in attention."""
    bounds, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if bounds is None:
        raise RuntimeError(f"{ATTENTION} attention needs packed rows (ftbench.packing.pack)")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, heads, D]
    # a row no longer than the window sees all of itself: the sliding window changes nothing
    window = sliding_window if sliding_window and longest > sliding_window else None
    if q.is_cuda:
        out = _varlen(*as_autocast(q, k, v), bounds, longest, scaling, window)
    else:
        out = _row_by_row(q, k, v, bounds, scaling, window)
    return out[None], None


def as_autocast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in autocast's dtype where autocast is on. sdpa has an autocast rule and varlen_attn
    none: with a trained fp32 embedding (the full recipe) rotary embeddings come out fp32, and the
    FlashAttention kernel refuses fp32 inputs (seen on the H200), where sdpa would have run in bf16."""
    kind = tensors[0].device.type
    if not torch.is_autocast_enabled(kind):
        return tensors
    return tuple(t.to(torch.get_autocast_dtype(kind)) for t in tensors)


def _row_by_row(q, k, v, bounds, scaling, window):
    """sdpa on each row alone (the CPU path, and the reference the tests hold the GPU kernel to)."""
    outs = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        qi, ki, vi = (t[a:b].transpose(0, 1) for t in (q, k, v))  # [heads, n, D]
        mask = None
        if window:
            i = torch.arange(b - a, device=q.device)
            mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
        outs.append(
            F.scaled_dot_product_attention(
                qi, ki, vi, attn_mask=mask, is_causal=mask is None, scale=scaling, enable_gqa=True
            ).transpose(0, 1)
        )
    return torch.cat(outs)


def _varlen(q, k, v, bounds, longest, scaling, window):
    """FlashAttention-2 over variable-length rows (torch >= 2.10). Its keyword arguments changed between
    torch releases, so they are chosen from its signature."""
    from torch.nn.attention.varlen import varlen_attn

    accepts = _varlen_keywords()
    if "enable_gqa" in accepts:
        extra = {"enable_gqa": True}
    else:  # older kernels want as many key/value heads as query heads
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        extra = {}
    if "window_size" in accepts:
        # (left, right): causal is (-1, 0); a window of W tokens, itself included, is (W - 1, 0)
        extra["window_size"] = (window - 1 if window else -1, 0)
    elif window:
        return _row_by_row(q, k, v, bounds, scaling, window)
    else:
        extra["is_causal"] = True
    if "scale" in accepts:
        extra["scale"] = scaling
    elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-12:
        q = q * (scaling * q.shape[-1] ** 0.5)  # the kernel's own scale is 1/sqrt(D)
    return varlen_attn(q, k, v, bounds, bounds, longest, longest, **extra)


@functools.cache
def _varlen_keywords() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


# registered on import: any module that packs rows has imported this one, so the name always resolves
AttentionInterface.register(ATTENTION, packed_attention)
