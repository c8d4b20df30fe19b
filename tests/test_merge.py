import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ftbench import config, data, loss, merge, paths, qlora
from ftbench.loading import load_model, load_nf4

from .conftest import write_params


@pytest.fixture
def adapter(project, tiny_model_dir):
    """A LoRA adapter on the NF4 base with visible, random B matrices (fresh LoRA has B = 0)."""
    shutil.copytree(tiny_model_dir, paths.BASE)
    data.run(config.load())
    torch.manual_seed(0)
    model = get_peft_model(load_nf4(paths.BASE), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    for name, t in model.named_parameters():
        if "lora_B" in name:
            t.data.normal_(0, 0.02)
    folder = paths.run_dir("qlora", config.Run("builtin", 0))
    model.save_pretrained(folder)
    return folder


def batch_loss(model) -> float:
    rows = [json.loads(line) for line in paths.split_file("builtin", "test").read_text().splitlines()]
    with torch.no_grad():
        return (loss.answer_loss(model, rows) / loss.answer_tokens(rows)).item()


def test_merged_model_matches_the_4bit_model_with_its_adapter(adapter):
    merged, stats = merge.merged_model(paths.BASE, adapter, "nf4")
    assert stats["matrices"] == 14 and stats["relative_delta"] > 0
    assert all(t.dtype == torch.float32 for t in merged.parameters())
    with_adapter = batch_loss(qlora.load_trained(paths.BASE, adapter))
    # Same weights up to fp32 rounding of W + BA: agreement to 1e-4 relative on CPU.
    assert batch_loss(merged) == pytest.approx(with_adapter, rel=1e-4)
    assert abs(batch_loss(load_model(paths.BASE)) - with_adapter) > 1e-3


def test_original_merge_base_differs_from_nf4_by_the_quantization_error(adapter):
    nf4, _ = merge.merged_model(paths.BASE, adapter, "nf4")
    original, _ = merge.merged_model(paths.BASE, adapter, "original")
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
    expected, _ = merge.merged_model(paths.BASE, adapter, "original")
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(load_model(out, dtype=torch.float32).state_dict()[name], expected.state_dict()[name])
