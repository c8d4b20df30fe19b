"""How the test prompts are cut into generate calls: by default as many prompts a call as the memory the
device has free holds (evaluate.batch_size: auto), so that a large GPU decodes many answers per read of
the weights and a small one gets smaller calls instead of running out of memory.

A prompt's cost is read from the models' shapes (RowCost): its KV cache for prompt and answer, the
largest transient of one decoder layer over its prompt (prefill), and its next-token logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from ftbench.packing import causal_lm

GIB = 1024**3
# Share of the free memory a plan fills: the rest is left to the allocator's fragmentation and to what the
# estimate leaves out (a layer's weights dequantized for the NF4 + adapter form, the cache's growth by
# concatenation, one layer at a time).
HEADROOM = 0.8


@dataclass(frozen=True)
class RowCost:
    """Bytes one prompt holds during its generate call, summed over the models that decode it."""

    kv_per_token: int  # keys and values of every layer, per prompt or answer token
    prefill_per_token: int  # one layer's largest activations over the prompt: the MLP's, the residuals
    attention_per_pair: int  # prefill's attention scores: per (query, key) pair of the prompt, all heads
    per_row: int  # the next-token logits, their fp32 copy and what the decoder derives from them

    def bytes(self, width: int, new_tokens: int) -> int:
        """One prompt's bytes in a call whose prompts are left-padded to `width` tokens."""
        return (
            self.kv_per_token * (width + new_tokens)
            + self.prefill_per_token * width
            + self.attention_per_pair * width * width
            + self.per_row
        )


def row_cost(models: list) -> RowCost:
    """The RowCost of decoding with `models` together (one model, or an ensemble's members)."""
    parts = [model_cost(m) for m in models]
    return RowCost(*(sum(getattr(c, f) for c in parts) for f in RowCost.__dataclass_fields__))


def model_cost(model) -> RowCost:
    lm = causal_lm(model)
    c = lm.config.get_text_config()
    size = lm.get_input_embeddings().weight.element_size()  # the compute dtype's, also for NF4 models
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return RowCost(
        kv_per_token=2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * size,
        # gate, up and their product in the MLP; the residual stream, its normed copy and the attention
        # output; the queries, keys and values
        prefill_per_token=(3 * c.intermediate_size + 4 * c.hidden_size) * size
        + (c.num_attention_heads + 2 * c.num_key_value_heads) * head_dim * size,
        # eager arithmetic: scores, scores + mask, their fp32 softmax and its cast back; two masks (sliding
        # and full) of the compute dtype
        attention_per_pair=c.num_attention_heads * (3 * size + 4) + 2 * size,
        per_row=c.vocab_size * (size + 3 * 4),
    )


def free_bytes(max_gpu_memory_gib: float | None) -> int:
    """Memory this process can still take: the GPU's free memory and torch's cached but unused blocks,
    within resources.max_gpu_memory_gib; on a CPU, the RAM available."""
    if not torch.cuda.is_available():
        return psutil.virtual_memory().available
    free, _ = torch.cuda.mem_get_info()
    allocated = torch.cuda.memory_allocated()
    free += torch.cuda.memory_reserved() - allocated
    if max_gpu_memory_gib:
        free = min(free, int(max_gpu_memory_gib * GIB) - allocated)
    return max(free, 0)


def by_memory(lengths: list[int], new_tokens: int, cost: RowCost, budget: float) -> list[list[int]]:
    """Positions of `lengths` (ascending) cut into calls of consecutive prompts whose RowCost, at the
    call's widest prompt, stays within `budget` bytes. A prompt alone over the budget is a call alone."""
    calls: list[list[int]] = []
    for pos, width in enumerate(lengths):
        if calls and (len(calls[-1]) + 1) * cost.bytes(width, new_tokens) <= budget:
            calls[-1].append(pos)
        else:
            calls.append([pos])
    return calls


def fixed(count: int, batch_size: int) -> list[list[int]]:
    """Positions 0..count-1 in calls of `batch_size` (evaluate.batch_size set to a number)."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def call_bytes(widths: list[int], new_tokens: int, cost: RowCost) -> int:
    """The bytes a call of prompts of these widths is estimated to hold."""
    return len(widths) * cost.bytes(max(widths), new_tokens)
