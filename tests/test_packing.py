"""Packed attention's dtype under autocast (the packed loss itself: tests/test_train.py)."""

import torch

from ftbench import packing


def test_packed_attention_inputs_take_autocasts_dtype_as_sdpa_would():
    """FlashAttention's variable-length kernel refuses fp32 and, unlike sdpa, has no autocast rule: the
    full recipe's fp32 rotary embeddings reached it as fp32 on the H200. Inputs are cast as autocast
    would cast sdpa's, and left alone outside autocast (checked here with the CPU's autocast)."""
    q, k, v = (torch.randn(4, 2, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert {t.dtype for t in packing.as_autocast(q, k, v)} == {torch.bfloat16}
    assert {t.dtype for t in packing.as_autocast(q, k, v)} == {torch.float32}
