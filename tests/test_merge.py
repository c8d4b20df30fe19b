import json

import pytest
import torch

from ftbench import loss
from ftbench.common import config, paths
from ftbench.loading import load_model
from ftbench.recipes import qlora
from ftbench.recipes.qlora import RECIPE as QLORA
from ftbench.stages import merge

from .conftest import write_params


def batch_loss(model) -> float:
    rows = [json.loads(line) for line in paths.split_file("builtin", "test").read_text().splitlines()]
    with torch.no_grad():
        return (loss.answer_loss(model, rows) / loss.answer_tokens(rows)).item()


def merge_onto(adapter, merge_base: str):
    return qlora.merged_model(paths.BASE, adapter, merge_base, QLORA.load_trained(paths.BASE, adapter))


def test_merged_model_matches_the_4bit_model_with_its_adapter(adapter):
    merged, stats = merge_onto(adapter, "nf4")
    assert stats["matrices"] == 14 and stats["relative_delta"] > 0
    assert all(t.dtype == torch.float32 for t in merged.parameters())
    with_adapter = batch_loss(QLORA.load_trained(paths.BASE, adapter))
    # Same weights up to fp32 rounding of W + BA: agreement to 1e-4 relative on CPU.
    assert batch_loss(merged) == pytest.approx(with_adapter, rel=1e-4)
    assert abs(batch_loss(load_model(paths.BASE)) - with_adapter) > 1e-3


def test_original_merge_base_differs_from_nf4_by_the_quantization_error(adapter):
    nf4, _ = merge_onto(adapter, "nf4")
    original, _ = merge_onto(adapter, "original")
    base = load_model(paths.BASE)
    name = "model.layers.0.mlp.up_proj.weight"
    w_nf4, w_orig, w0 = (m.state_dict()[name] for m in (nf4, original, base))
    delta = w_orig - w0
    assert delta.abs().max() > 0
    assert 0 < (w_nf4 - w_orig).abs().max() <= w0.abs().max() / 4  # NF4 steps, not the delta, differ


def test_merge_stage_writes_full_models_and_records_the_base(adapter, project, tiny_model_dir):
    # not the default (nf4): the stage must follow params.yaml's merge base, in the weights and the record
    write_params(project, tiny_model_dir, **{"merge.qlora.base": "original"})
    facts = merge.run("qlora", config.load())
    assert facts["builtin/seed0"]["base"] == "original"
    out = paths.model_dir("merged/qlora") / "builtin" / "seed0"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert json.loads((paths.METRICS / "merge" / "qlora.json").read_text()) == facts
    expected, _ = merge_onto(adapter, "original")
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(load_model(out, dtype=torch.float32).state_dict()[name], expected.state_dict()[name])


def test_merging_after_the_nf4_model_ran_is_refused_where_bitsandbytes_repacks_its_weights(adapter):
    from bitsandbytes.functional import has_avx512bf16

    if torch.cuda.is_available() or not has_avx512bf16():
        pytest.skip("bitsandbytes repacks 4-bit weights only on a CPU with AVX512-BF16")
    trained = QLORA.load_trained(paths.BASE, adapter).eval()
    batch_loss(trained)  # the first forward pass in eval mode repacks the weights for bitsandbytes' kernel
    with pytest.raises(RuntimeError, match="before the NF4 model runs"):
        qlora.merged_model(paths.BASE, adapter, "nf4", trained=trained)
