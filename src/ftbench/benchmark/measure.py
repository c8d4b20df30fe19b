"""What `ftbench bench` measures: a model of a bench shape (random weights: speed and memory do not depend
on their values), the data stage's rows, and the train stage's own steps and the evaluate stage's own
generation on it, with their speed and NVML and torch memory peaks."""

from __future__ import annotations

import gc
import math
import platform
from datetime import date
from importlib.metadata import version
from pathlib import Path

import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, Gemma3TextConfig

from ftbench import recipes
from ftbench.common import config, resources
from ftbench.common.errors import UserError
from ftbench.data.prepare import prepare
from ftbench.evaluation import generate
from ftbench.loading import compute_dtype, load_model
from ftbench.loss import answer_loss, answer_tokens, autocast, causal_lm
from ftbench.training import graphs, loop

GIB = 2**30


SHAPES = {
    "gemma3-1b": dict(
        hidden_size=1152,
        intermediate_size=6912,
        num_hidden_layers=26,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        sliding_window=512,
        max_position_embeddings=32768,
        query_pre_attn_scalar=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=262144,
        sliding_window=64,
        max_position_embeddings=1024,
        query_pre_attn_scalar=32,
        tie_word_embeddings=True,
    ),
}


def build_model(shape: str, tokenizer, folder: Path) -> Path:
    """A random model of the shape, saved like models/base (bf16 safetensors plus the tokenizer)."""
    cfg = Gemma3TextConfig(
        **SHAPES[shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def dataset_splits(p: config.Params, source: str | None, tokenizer) -> dict[str, list[dict]]:
    """The splits the data stage writes for params.yaml's first dataset (`source` in place of its own)."""
    name, ds = next(iter(p.data.datasets.items()))
    if source:
        ds = ds.model_copy(update={"source": source})
    prepared, _ = prepare(name, ds, p, tokenizer)
    return prepared["splits"]


def optimizer_steps(rows: list[dict], method: config.MethodParams, p: config.Params, n: int) -> list:
    """The first `n` optimizer steps the train stage would run on `rows`, by its own code: as many epochs
    as `n` steps of batch_size x grad_accum rows need, each step cut into micro_batch_tokens passes."""
    epochs = math.ceil(n * method.batch_size * method.grad_accum / len(rows))
    method = method.model_copy(update={"epochs": epochs})
    p = p.model_copy(update={"train": p.train.model_copy(update={"max_steps": n})})
    return loop.optimizer_steps(rows, method, p, seed=p.seeds[0])


def with_overrides(p: config.Params, variant: str) -> tuple[str, config.Params]:
    """`method:key=value,...`: train.* keys go to params.train, the rest to the method's own block."""
    name, _, sets = variant.partition(":")
    if name not in p.methods:
        raise UserError(f"bench: variant {variant!r}: no method {name!r} in params.yaml")
    raw = p.model_dump()
    for item in filter(None, sets.split(",")):
        key, _, value = item.partition("=")
        config.set_key(raw if key.startswith("train.") else raw["methods"][name], key, value)
    try:
        return name, config.Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key, note = config.error_key(first["loc"]), config.recipe_note(first["loc"])
        raise UserError(f"bench: variant {variant!r}: {key}: {first['msg']}{note}") from None


def bench_training(variant: str, p0: config.Params, base: Path, rows: list[dict], args) -> dict:
    """Warm-up steps, then timed steps of the real train_step; GaLore's refresh amortised over its gap."""
    name, p = with_overrides(p0, variant)
    method = p.methods[name]
    steps = optimizer_steps(rows, method, p, args.warmup + args.steps)
    _free_gpu()
    with resources.Sampler() as sampler:
        recipe = recipes.get(method.recipe)
        model, optimizer, _ = recipe.setup(base, method, p, seed=0)
        loop.use_liger_kernels(model, p)
        loop.compile_layers(model, p)
        passes = loop.Passes.setup(model, method, p, steps)
        trainable = [t for g in optimizer.param_groups for t in g["params"]]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        model.train()
        t0 = resources.synced_clock()
        for s in steps[: args.warmup]:
            loop.train_step(recipe, model, optimizer, scheduler, trainable, s, p, passes)
        warmup_s = resources.synced_clock() - t0  # first-call kernel builds, and torch.compile's compile
        refresh_s, gap = recipe.periodic_cost(optimizer, method) or (0.0, None)
        timed = steps[args.warmup :]
        t0 = resources.synced_clock()
        losses = [
            loop.train_step(recipe, model, optimizer, scheduler, trainable, s, p, passes)["loss"]
            for s in timed
        ]
        seconds = resources.synced_clock() - t0
    flat = [r for s in timed for m in s for r in m]
    tokens, targets = sum(len(r["input_ids"]) for r in flat), answer_tokens(flat)
    amortised = seconds + (refresh_s * len(timed) / gap if gap else 0.0)
    flops = resources.training_flops(causal_lm(model).config, recipe.weight_gradients, tokens, targets)
    result = {
        "variant": variant,
        "recipe": method.recipe,
        "steps": len(timed),
        "rows_per_step": round(len(flat) / len(timed), 2),
        "tokens_per_step": round(tokens / len(timed)),
        "forward_passes_per_step": round(sum(len(s) for s in timed) / len(timed), 2),
        "tokens_per_s": round(tokens / amortised),
        "mfu": resources.mfu(flops / amortised, resources.peak_tflops(p.resources.peak_tflops)),
        "warmup_s": round(warmup_s, 2),
        "refresh_s": round(refresh_s, 2) if gap else None,
        "refresh_share": round(1 - seconds / amortised, 4) if gap else None,
        "final_loss": round(losses[-1], 4),
        "graph_lengths": graphs.lengths(passes.graphs),
        **_memory(sampler),
    }
    if p.train.fused_cross_entropy:
        result["fused_loss_rel_diff"] = _fused_loss_difference(model, timed[0][0])
    result["packed_loss_rel_diff"] = _packed_loss_difference(model, timed[0][0])
    del model, optimizer, scheduler, trainable, passes
    return result


@torch.no_grad()
def _fused_loss_difference(model, rows: list[dict]) -> float | None:
    """Relative difference of the fused and the plain loss on one forward pass (GPU only)."""
    if not torch.cuda.is_available():
        return None
    with autocast():
        fused, plain = answer_loss(model, rows, fused=True), answer_loss(model, rows, fused=False)
    return round(abs(fused.item() - plain.item()) / abs(plain.item()), 6)


@torch.no_grad()
def _packed_loss_difference(model, rows: list[dict]) -> float:
    """Relative difference of one packed pass's loss and its rows' losses one row a pass: packed
    attention that leaked across rows (or a kernel that differs) shows here, on the GPU's own kernel."""
    with autocast():
        packed = answer_loss(model, rows).item()
        alone = sum(answer_loss(model, [r]).item() for r in rows)
    return round(abs(packed - alone) / abs(alone), 6)


def bench_generation(base: Path, rows: list[dict], tokenizer, p: config.Params, batch: int, args) -> dict:
    """Greedy answers to the test split's prompts (cycled) through generate.generate, as the evaluate
    stage runs them."""
    test_prompts = generate.generation_prompts(rows)
    prompts = [test_prompts[i % len(test_prompts)] for i in range(args.eval_answers)]
    cap = args.eval_new_tokens or p.evaluate.max_new_tokens
    p = p.model_copy(
        update={"evaluate": p.evaluate.model_copy(update={"max_new_tokens": cap, "batch_size": batch})}
    )
    _free_gpu()
    with resources.Sampler() as sampler:
        model = load_model(base, compute_dtype())
        t0 = resources.synced_clock()
        answers = generate.generate(model, tokenizer, prompts, p)
        seconds = resources.synced_clock() - t0
    new_tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    del model
    return {
        "variant": f"generate (batch {batch})",
        "answers": len(answers),
        "max_new_tokens": cap,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "seconds": round(seconds, 1),
        "new_tokens_per_s": round(new_tokens / seconds),
        **_memory(sampler),
    }


def or_out_of_memory(label: str, measure) -> dict:
    """One variant that does not fit must not hide the others: it is reported as such."""
    try:
        return measure()
    except torch.cuda.OutOfMemoryError:
        _free_gpu()
        return {
            "variant": label,
            "error": f"out of memory ({torch.cuda.max_memory_allocated() / GIB:.1f} GiB)",
        }


def _memory(sampler: resources.Sampler) -> dict:
    """NVML's peak (the device as a whole: CUDA context and allocator caches included) beside torch's:
    its tensors' peak, its allocator's reserved peak, and what the CUDA graphs' pool holds at the end."""
    nvml = sampler.gpu
    if not torch.cuda.is_available():
        return {"nvml_peak_gib": None, "torch_peak_gib": None}
    return {
        "nvml_peak_gib": round((nvml.peak_used + nvml.baseline) / GIB, 2) if nvml else None,
        "torch_peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "torch_reserved_peak_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
        "graph_pool_gib": round(graphs.pool_bytes() / GIB, 2),
    }


def _free_gpu() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def environment() -> dict:
    """Where the figures come from; printed as a JSON line, so a saved log can rebuild the table."""
    packages = ("transformers", "peft", "bitsandbytes", "galore-torch", "liger-kernel")
    return {
        "date": str(date.today()),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: _version(name) for name in packages},
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except Exception:  # not installed: the table says so
        return "absent"


def mean_length(rows: list[dict]) -> float:
    return sum(len(r["input_ids"]) for r in rows) / len(rows)
