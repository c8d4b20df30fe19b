import types

import torch
import torch.nn.functional as F

from ftbench import loading


def test_a_query_row_that_may_attend_to_nothing_attends_to_every_key():
    """A left pad's first positions have no key to attend to; on CUDA sdpa returns NaN for such rows and
    it reached the first generated token on the H200 (transformers#47651). Here (the CPU returns zeros
    for them) the row must come out as attention over every key, and the other rows as sdpa's."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
    mask[..., 0, :] = False  # the first query row attends to nothing
    module = types.SimpleNamespace(is_causal=True, training=False)
    out, _ = loading.sdpa_attending_somewhere(module, q, k, v, mask, dropout=0.0, scaling=None)
    every_key = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    assert torch.allclose(out[:, 0], every_key[:, 0], atol=1e-6)
    assert torch.allclose(out[:, 1:], masked[:, 1:], atol=1e-6)


def test_models_load_with_that_attention(tiny_model_dir):
    assert loading.load_model(tiny_model_dir).config._attn_implementation == loading.SDPA
