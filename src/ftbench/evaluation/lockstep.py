"""Greedy decoding from several causal LMs as one: each step averages the members' next-token
distributions with the ensemble's weights and feeds the chosen token to every member."""

from __future__ import annotations

import inspect

import torch

from ftbench.packing import causal_lm


class Lockstep:
    """Greedy decoding from several causal LMs at once, through the calls generate.generate makes of a
    transformers model (eval, generate). With one member's weight 1 and the others' 0, or a model with
    itself, it gives exactly that model's greedy answers (tests/test_ensemble.py)."""

    def __init__(self, members: list, weights: list[float], average: str) -> None:
        self.members, self.weights, self.average = members, weights, average

    def eval(self) -> Lockstep:
        for model in self.members:
            model.eval()
        return self

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config
    ) -> torch.Tensor:
        """The prompts (left-padded) followed by up to max_new_tokens chosen tokens; a row that has
        produced a stop token is continued with padding, as transformers' generate does."""
        gen = generation_config
        stops = torch.tensor(gen.eos_token_id, device=input_ids.device)
        # transformers' generate derives positions from the mask so: each row counts from its first
        # real token, the left padding sits at 0
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        caches = [None] * len(self.members)
        sequences, step_ids, mask = input_ids, input_ids, attention_mask
        running = torch.ones(len(input_ids), dtype=torch.bool, device=input_ids.device)
        for _ in range(gen.max_new_tokens):
            scores = 0
            for k, model in enumerate(self.members):
                logits, caches[k] = next_token_logits(model, step_ids, mask, positions, caches[k])
                scores = scores + self.weights[k] * self.scale(logits)
            tokens = torch.where(running, scores.argmax(-1), gen.pad_token_id)
            sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
            running &= ~torch.isin(tokens, stops)
            if not running.any():
                break
            step_ids, positions = tokens[:, None], positions[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=-1)
        return sequences

    def scale(self, logits: torch.Tensor) -> torch.Tensor:
        """What is averaged: probabilities (a mixture) or log-probabilities (a product of experts)."""
        if self.average == "log":
            return torch.log_softmax(logits, dim=-1)
        return torch.softmax(logits, dim=-1)


def next_token_logits(model, ids, mask, positions, cache) -> tuple[torch.Tensor, object]:
    """One forward pass over the new tokens: the last position's logits in fp32 (as generate takes
    them) and the KV cache grown by those tokens (a new one when `cache` is None)."""
    name = cache_argument(model)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{name: cache},
    )
    return out.logits[:, -1].float(), out[name]


def cache_argument(model) -> str:
    """The KV cache's name in forward() and in its output: `cache` in transformers >= 5.2x (which still
    takes `past_key_values` with a deprecation warning), `past_key_values` before (5.17 on the H200)."""
    parameters = inspect.signature(causal_lm(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
