"""Generation's calls sized by memory (evaluation.batching, evaluate.batch_size: auto): the estimate
against a real KV cache, the plan within its budget, answers the same however the prompts are cut, and
a call that runs out of memory planned again instead of a traceback."""

import random

import pytest
import torch

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.common.errors import UserError
from ftbench.evaluation import batching, generate
from ftbench.evaluation.lockstep import Lockstep
from ftbench.loading import load_model, load_tokenizer
from ftbench.packing import causal_lm

from .test_config import error_for, write


def with_batch_size(p, size):
    return p.model_copy(update={"evaluate": p.evaluate.model_copy(update={"batch_size": size})})


@pytest.fixture
def decoding(prepared):
    """(the tiny model, its tokenizer, the test prompts, params)."""
    model = load_model(paths.BASE)
    prompts = generate.generation_prompts(read_jsonl(paths.split_file("builtin", "test")))
    return model, load_tokenizer(paths.BASE), prompts, prepared


def test_the_kv_estimate_is_the_bytes_of_a_real_cache(tiny_model_dir):
    model = load_model(tiny_model_dir)
    tokens = 11  # within the sliding window: every layer keeps every token
    out = model(input_ids=torch.arange(3, 3 + tokens)[None], use_cache=True)
    cache = out.past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert batching.model_cost(model).kv_per_token * tokens == held


def test_an_ensemble_costs_its_members_together(tiny_model_dir):
    model = load_model(tiny_model_dir)
    one = batching.row_cost([model])
    assert batching.row_cost([model, model]).bytes(40, 8) == 2 * one.bytes(40, 8)


def test_calls_stay_within_the_budget_and_answer_every_prompt_once():
    cost = batching.RowCost(
        kv_per_token=1_000, prefill_per_token=3_000, attention_per_pair=20, per_row=50_000
    )
    lengths = sorted(random.Random(0).randint(20, 300) for _ in range(2_000))
    sizes = []
    for budget in (1e9, 2e8, 2e7):
        calls = batching.by_memory(lengths, 256, cost, budget)
        assert [pos for call in calls for pos in call] == list(range(len(lengths)))
        for call in calls:
            assert batching.call_bytes([lengths[pos] for pos in call], 256, cost) <= budget
        sizes.append(max(map(len, calls)))
    assert sizes[0] > sizes[1] > sizes[2] > 1  # a smaller device gets smaller calls


def test_a_prompt_alone_over_the_budget_is_a_call_alone():
    cost = batching.RowCost(kv_per_token=1, prefill_per_token=0, attention_per_pair=0, per_row=0)
    assert batching.by_memory([5, 6, 100, 200], 0, cost, 50) == [[0, 1], [2], [3]]


def test_a_number_fixes_the_calls():
    assert batching.fixed(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_auto_decodes_many_prompts_a_call_with_the_answers_of_one_prompt_a_call(decoding):
    model, tokenizer, prompts, p = decoding
    calls = generate.Calls(list(range(len(prompts))), sorted(map(len, prompts)), [model], p)
    assert len(calls.pending) == 1 and len(prompts) > 1  # the CPU's memory holds every prompt at once
    alone = generate.generate(model, tokenizer, prompts, with_batch_size(p, 1))  # no padding
    assert len(set(alone)) > 1  # answers that tell prompts apart
    assert generate.generate(model, tokenizer, prompts, with_batch_size(p, "auto")) == alone
    assert generate.generate(model, tokenizer, prompts, with_batch_size(p, 3)) == alone
    together = Lockstep([model, model], [0.5, 0.5], "probability")
    assert generate.generate(together, tokenizer, prompts, with_batch_size(p, "auto")) == alone


class OutOfMemoryAbove:
    """A model whose generate call fails as a GPU's does once a call holds more than `rows` prompts: the
    CPU has no out-of-memory error of its own to raise."""

    def __init__(self, model, rows: int) -> None:
        self.members, self.rows, self.calls = [model], rows, []

    def eval(self):
        return self

    def generate(self, input_ids, **kwargs):
        self.calls.append(len(input_ids))
        if len(input_ids) > self.rows:
            raise torch.OutOfMemoryError("CUDA out of memory (the test's)")
        return self.members[0].generate(input_ids=input_ids, **kwargs)


def test_a_call_out_of_memory_is_made_again_in_smaller_calls_with_the_same_answers(decoding, caplog):
    model, tokenizer, prompts, p = decoding
    expected = generate.generate(model, tokenizer, prompts, p)
    small = OutOfMemoryAbove(model, rows=2)
    assert generate.generate(small, tokenizer, prompts, with_batch_size(p, "auto")) == expected
    # all 8 prompts fail, then 4 (half the bytes), then calls of at most 2 answer every prompt once
    assert [rows for rows in small.calls if rows > 2] == [len(prompts), len(prompts) // 2]
    assert sum(rows for rows in small.calls if rows <= 2) == len(prompts)
    assert "ran out of GPU memory" in caplog.text


def test_a_single_prompt_out_of_memory_is_one_line_naming_the_fix(decoding):
    model, tokenizer, prompts, p = decoding
    with pytest.raises(UserError, match="lower evaluate.max_new_tokens"):
        generate.generate(OutOfMemoryAbove(model, rows=0), tokenizer, prompts, p)


def test_free_memory_on_a_cpu_is_the_ram_available():
    import psutil

    assert 0 < batching.free_bytes(None) <= psutil.virtual_memory().total


def test_the_nf4_model_costs_its_compute_dtype(adapter):
    from ftbench import recipes

    trained = recipes.get("qlora").load_trained(paths.BASE, adapter)
    assert batching.model_cost(trained) == batching.model_cost(causal_lm(load_model(paths.BASE)))


@pytest.mark.parametrize("value", ["auto", 64])
def test_batch_size_is_auto_or_a_number(tmp_path, value):
    assert (
        config.load(write(tmp_path, lambda p: p["evaluate"].update(batch_size=value))).evaluate.batch_size
        == value
    )


@pytest.mark.parametrize("value", [0, "big"])
def test_another_batch_size_is_one_line_naming_the_key(tmp_path, value):
    assert "evaluate.batch_size" in error_for(tmp_path, lambda p: p["evaluate"].update(batch_size=value))
