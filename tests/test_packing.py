"""Packed passes: how rows are cut into them, and packed attention's dtype under autocast (the packed loss
itself: tests/test_train.py)."""

import torch

from ftbench import packing


def test_token_budget_passes_keep_every_row_within_the_budget():
    rows = [{"input_ids": [0] * n, "prompt_len": 1, "id": i} for i, n in enumerate([30, 5, 12, 60, 7, 20])]
    passes = packing.passes(rows, budget=64)
    assert sorted(r["id"] for p in passes for r in p) == list(range(6))
    assert all(sum(len(r["input_ids"]) for r in p) <= 64 for p in passes)  # packed: no padding
    assert len(passes) == 3  # 60 | 30 + 20 + 12 | 7 + 5: each pass as full as the order allows
    assert packing.passes(rows, budget=10)[0] == [rows[3]]  # longer than the budget: alone


def test_packed_attention_inputs_take_autocasts_dtype_as_sdpa_would():
    """FlashAttention's variable-length kernel refuses fp32 and, unlike sdpa, has no autocast rule: the
    full recipe's fp32 rotary embeddings reached it as fp32 on the H200. Inputs are cast as autocast
    would cast sdpa's, and left alone outside autocast (checked here with the CPU's autocast)."""
    q, k, v = (torch.randn(4, 2, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert {t.dtype for t in packing.as_autocast(q, k, v)} == {torch.bfloat16}
    assert {t.dtype for t in packing.as_autocast(q, k, v)} == {torch.float32}
