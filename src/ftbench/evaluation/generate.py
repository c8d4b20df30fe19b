"""Greedy answers to the test prompts, batched by prompt length, left-padded and checked for it.

Generation runs in eager attention's arithmetic (left padding corrupted sdpa's answers: PADDING_TOLERANCE)
without eager's copies of the KV cache (grouped_eager_attention).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, GenerationConfig
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ftbench import chat
from ftbench.common import config, distributed
from ftbench.common.errors import UserError
from ftbench.common.progress import LOG, bar
from ftbench.evaluation import batching
from ftbench.loading import device

# The left-padding check (generate): the most padded prompt of each batch, padded as in the batch
# and alone, must get the same next-token log-probabilities within this many nats (the largest gap over
# the vocabulary). Measured on the H200 (torch 2.11, transformers 5.17, Gemma 3 270M, bf16, 36 pads before
# a 29-token prompt): eager attention 0.50; sdpa 54, and 8.1 with fully masked rows unmasked
# (transformers#47651), which corrupted the first answer token of a whole batch.
PADDING_TOLERANCE = 1.0
# Generation's attention: eager's arithmetic (additive mask, fp32 softmax), which passes the check above,
# without eager's copies of the KV cache (grouped_eager_attention).
GENERATION_ATTENTION = "ftbench_grouped_eager"


def use_generation_attention(model) -> None:
    """Switch a transformers model to GENERATION_ATTENTION: eager's arithmetic, because with left padding
    sdpa's answers were corrupted on the H200 (PADDING_TOLERANCE)."""
    # transformers finds attention functions by name: ours is registered before a model is switched to it
    AttentionInterface.register(GENERATION_ATTENTION, grouped_eager_attention)
    AttentionMaskInterface.register(GENERATION_ATTENTION, eager_mask)
    model.set_attn_implementation(GENERATION_ATTENTION)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], p: config.Params) -> list[str]:
    """Greedy answers, batched by similar prompt length (as many a call as memory holds, or
    evaluate.batch_size), left-padded, cut at the end of the turn. `model` is a transformers model or
    anything with its eval() and generate() (an ensemble.Lockstep)."""
    stops = [chat.end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    gen = GenerationConfig(
        max_new_tokens=p.evaluate.max_new_tokens,
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    for member in transformers_models(model):
        use_generation_attention(member)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    order = order[distributed.rank() :: distributed.world_size()]  # this rank's share, lengths alike
    calls = Calls(order, [len(prompts[i]) for i in order], transformers_models(model), p)
    answers: dict[int, str] = {}
    with bar("generate", len(order), unit=" answers") as answers_bar:
        while idx := calls.next():
            try:
                out, width = generate_call(model, tokenizer, [prompts[i] for i in idx], gen)
            except torch.OutOfMemoryError:
                calls.out_of_memory()  # planned again, smaller
                continue
            for row, i in enumerate(idx):
                answers[i] = answer_text(tokenizer, out[row, width:].tolist(), stops)
            answers_bar.update(len(idx))
    merged = {i: a for share in distributed.gather(answers) for i, a in share.items()}
    return [merged[i] for i in range(len(prompts))]


def generate_call(
    model, tokenizer, prompts: list[list[int]], gen: GenerationConfig
) -> tuple[torch.Tensor, int]:
    """One generate call: the prompts left-padded to the longest, the padding checked on the most padded
    one; returns the sequences and the padded prompt width after which the answers start."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device()), mask.to(device())
    shortest = min(range(len(prompts)), key=lambda row: len(prompts[row]))  # the most padded
    check_left_padding(model, ids[shortest], mask[shortest], prompts[shortest])
    return model.generate(input_ids=ids, attention_mask=mask, generation_config=gen), width


class Calls:
    """The generate calls still to make, as lists of prompt indices (ascending length): sized by
    memory (batching.by_memory) under evaluate.batch_size: auto, else that many prompts a call. A call
    that runs out of memory is planned again, with what remains, at half its estimated bytes."""

    def __init__(self, order: list[int], lengths: list[int], models: list, p: config.Params) -> None:
        self.order, self.lengths, self.new_tokens = order, lengths, p.evaluate.max_new_tokens
        self.cost = batching.row_cost(models)
        self.current: list[int] = []  # positions in `order` of the call being made
        size = p.evaluate.batch_size
        if size == "auto":
            budget = batching.HEADROOM * batching.free_bytes(p.resources.max_gpu_memory_gib)
            self.pending = batching.by_memory(lengths, self.new_tokens, self.cost, budget)
            LOG.info(
                f"generate: {len(order):,} prompts in {len(self.pending)} call(s) of up to "
                f"{max(map(len, self.pending), default=0):,} ({budget / batching.GIB:.1f} GiB planned, "
                f"{batching.HEADROOM:.0%} of the free memory; evaluate.batch_size sets a number instead)"
            )
        else:
            self.pending = batching.fixed(len(order), size)

    def next(self) -> list[int]:
        """The next call's prompt indices; empty when every prompt is answered."""
        if not self.pending:
            return []
        self.current = self.pending.pop(0)
        return [self.order[pos] for pos in self.current]

    def out_of_memory(self) -> None:
        """The current call did not fit: the rest, from it on, in calls of half its estimated bytes (torch
        keeps the freed memory cached for them)."""
        if len(self.current) == 1:
            raise UserError(
                "out of GPU memory generating a single answer: lower evaluate.max_new_tokens or "
                "data.max_length, or free the GPU of other processes"
            )
        start = self.current[0]
        widths = [self.lengths[pos] for pos in self.current]
        budget = batching.call_bytes(widths, self.new_tokens, self.cost) / 2
        rest = self.lengths[start:]
        calls = batching.by_memory(rest, self.new_tokens, self.cost, budget)
        self.pending = [[start + pos for pos in call] for call in calls]
        LOG.warning(
            f"generate: a call of {len(self.current):,} prompts ran out of GPU memory; the remaining "
            f"{len(rest):,} go in {len(self.pending)} smaller calls "
            f"({budget / batching.GIB:.1f} GiB planned each)"
        )


def grouped_eager_attention(module, query, key, value, attention_mask, scaling=None, softcap=None, **kwargs):
    """transformers' eager attention (Gemma 3's eager_attention_forward) in eval mode, without `repeat_kv`.

    Gemma 3 has one key/value head per 4 query heads, and eager copies the keys and values once per query
    head, at every layer and generated token: at 1,024 answers a batch that copy of the KV cache was half
    of a decoding step on the H200. Here each group's query heads are stacked along the query axis and
    read their one key/value head in place: the same products, mask and fp32 softmax. On the H200 (1B
    shape, 1,024 GSM8K prompts, 64 new tokens): 5.37 s -> 3.09 s. No dropout: generation runs in eval
    mode."""
    if scaling is None:
        scaling = module.head_dim**-0.5
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    weights = torch.matmul(query.reshape(batch, kv_heads, group * q_len, dim), key.transpose(2, 3)) * scaling
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        kv_len = weights.shape[-1]
        weights = weights.view(batch, kv_heads, group, q_len, kv_len) + attention_mask[:, :, None, :, :kv_len]
        weights = weights.view(batch, kv_heads, group * q_len, kv_len)
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def transformers_models(model) -> list:
    """The transformers models that generate: an ensemble's members (lockstep.Lockstep, read by its
    attribute so that evaluating a single model does not import the ensemble), else the model itself."""
    return getattr(model, "members", [model])


@torch.no_grad()
def check_left_padding(model, ids: torch.Tensor, mask: torch.Tensor, prompt: list[int]) -> None:
    """Stop if a left-padded prompt's next-token log-probabilities differ from the same prompt's alone
    (PADDING_TOLERANCE): every answer of a batch would then start from a corrupted first token."""
    if mask.all():
        return  # no padding, nothing to compare
    for member in transformers_models(model):
        padded = member(input_ids=ids[None], attention_mask=mask[None]).logits[0, -1]
        alone = member(input_ids=torch.tensor([prompt], device=ids.device)).logits[0, -1]
        gap = (padded.float().log_softmax(-1) - alone.float().log_softmax(-1)).abs().max().item()
        if not gap <= PADDING_TOLERANCE:  # NaN fails too
            raise UserError(
                f"batched generation is corrupted on this stack: a left-padded prompt's next-token "
                f"log-probabilities are {gap:.3g} nats from the same prompt's alone (tolerance "
                f"{PADDING_TOLERANCE}); set evaluate.batch_size: 1, or use other torch/transformers versions"
            )


def answer_text(tokenizer, ids: list[int], stops: list[int]) -> str:
    """The generated ids up to the first stop token, as text. The cut is made here rather than left to
    `skip_special_tokens`: the Gemma 3 tokenizer read from the GGUF does not mark <end_of_turn> special
    under transformers 5.17, and on the H200 it was decoded into the answers as text."""
    end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True).strip()


def generation_prompts(rows: list[dict]) -> list[list[int]]:
    """Each test row's prompt cut from the ids the data stage wrote (chat.prompt_ids), so that generation,
    the test loss and training all see the same tokens, chat markup in the data included."""
    return [r["input_ids"][: r["prompt_len"]] for r in rows]
