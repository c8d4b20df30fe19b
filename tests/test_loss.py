"""Losses without gradients (validation, test loss, merge checks): token-bounded passes, chunked logits."""

import pytest
import torch

from ftbench import loss, packing
from ftbench.common import paths
from ftbench.common.atomic import read_jsonl
from ftbench.loading import load_model


def test_mean_loss_packs_passes_of_at_most_its_token_budget_and_matches_one_row_a_pass(prepared, monkeypatch):
    model = load_model(paths.BASE)
    rows = read_jsonl(paths.split_file("builtin", "train"))[:12]
    alone = sum(loss.answer_loss(model, [r]).item() for r in rows) / loss.answer_tokens(rows)
    sizes = []
    real = loss.answer_loss
    monkeypatch.setattr(loss, "answer_loss", lambda m, batch, *a: sizes.append(batch) or real(m, batch, *a))
    monkeypatch.setattr(loss, "LOSS_PASS_TOKENS", 200)
    assert loss.mean_loss(model, rows) == pytest.approx(alone, rel=1e-5)
    assert len(sizes) > 1 and sorted(map(id, (r for b in sizes for r in b))) == sorted(map(id, rows))
    assert all(sum(len(r["input_ids"]) for r in b) <= 200 for b in sizes if len(b) > 1)


def test_without_gradients_the_plain_loss_takes_its_logits_a_chunk_at_a_time(prepared, monkeypatch):
    """The same sum, with no more than FUSED_CHUNK_TOKENS answer positions' logits at once."""
    model = load_model(paths.BASE)
    rows = read_jsonl(paths.split_file("builtin", "train"))[:12]
    whole = loss.answer_loss(model, rows)  # with gradients: every logit at once
    chunks = []
    real = loss._plain_loss
    monkeypatch.setattr(loss, "_plain_loss", lambda lm, h, *a: chunks.append(len(h)) or real(lm, h, *a))
    monkeypatch.setattr(loss, "FUSED_CHUNK_TOKENS", 16)
    with torch.no_grad():
        chunked = loss.answer_loss(model, rows)
    assert len(chunks) > 1 and max(chunks) <= 16 and sum(chunks) == loss.answer_tokens(rows)
    torch.testing.assert_close(chunked, whole.detach(), rtol=1e-5, atol=1e-5)
    packing.use(model)  # answer_loss switched it; nothing else depends on it here
