"""Speed and memory benchmark: the pipeline's own training and generation code on a model of a given shape.

Random weights (speed and memory do not depend on their values), real token sequences, and the forward
passes `dvc repro` runs: params.yaml's first dataset (or --data) is split and tokenized by the data
stage's own code (data.sizes, data.max_length, data.overlong, fields), and its train rows are cut into
optimizer steps by the train stage's own code (loop.optimizer_steps): methods.<name>.batch_size x
grad_accum rows a step, in forward passes of its micro_batch_tokens. Each variant is a method of
params.yaml plus overrides, e.g. `qlora:grad_accum=8`, `galore:galore.svd=lowrank` or
`qlora:micro_batch_tokens=8192`. It prints one JSON line per variant (tokens/s, MFU, NVML and
torch peaks, SVD time for GaLore) and one for generation of the test split's prompts; --markdown writes
the table beside the stock recipe's figures (--peer).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import tempfile
from datetime import date
from importlib.metadata import version
from pathlib import Path

import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, Gemma3TextConfig

from ftbench import recipes
from ftbench.common import commands, config, resources
from ftbench.common.atomic import atomic_path
from ftbench.common.errors import UserError
from ftbench.data.prepare import prepare
from ftbench.evaluation import generate
from ftbench.loading import compute_dtype, configure_attention, load_model, load_tokenizer
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
SETUP_KEYS = ("shape", "steps", "warmup", "command")
SEED_PLAN_EXAMPLES = 52_000
START, END = (
    "<!-- ftbench bench: start -->",
    "<!-- ftbench bench: end -->",
)  # Alpaca's size: the seed's plan is projected at this scale


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = commands.parser("bench")
    ap.add_argument(
        "variants",
        nargs="*",
        default=["qlora", "galore"],
        help="method[:key=value,...], e.g. qlora:grad_accum=8 or qlora:micro_batch_tokens=8192",
    )
    ap.add_argument("--tokenizer", type=Path, help="a tokenizer folder (models/base)")
    ap.add_argument(
        "--data",
        help="a file or builtin in place of the source of params.yaml's first dataset (its format and "
        "fields kept); default: that dataset as it is",
    )
    ap.add_argument("--shape", choices=SHAPES, default="gemma3-1b")
    ap.add_argument(
        "--steps",
        type=int,
        default=20,
        help="timed optimizer steps per variant, as the train stage cuts them",
    )
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, kernels, SVD)")
    ap.add_argument(
        "--eval-answers",
        type=int,
        help="greedy answers to time (test prompts, cycled); default: data.sizes.test; 0 skips",
    )
    ap.add_argument("--eval-new-tokens", type=int, help="default: evaluate.max_new_tokens")
    ap.add_argument("--eval-batch", type=int, nargs="+", default=[], help="default: evaluate.batch_size")
    ap.add_argument(
        "--params",
        type=Path,
        default=config.PARAMS_FILE,
        help="the params.yaml whose data, rows per step and training knobs are run",
    )
    ap.add_argument("--peer", type=Path, help="JSON lines printed by peer_bench.py, for the table")
    ap.add_argument("--markdown", type=Path, help="write the results table to this file")
    ap.add_argument("--command", default="", help="the command line to quote in the markdown")
    ap.add_argument("--rebuild", type=Path, help="write --markdown from this saved output; run nothing")
    return ap.parse_args(argv)


# ---------------------------------------------------------------- inputs


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
    prepared, _ = prepare.prepare(name, ds, p, tokenizer)
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


# ---------------------------------------------------------------- measuring


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
        "final_loss": round(losses[-1]["loss"], 4),
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


def _or_out_of_memory(label: str, measure) -> dict:
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


# ---------------------------------------------------------------- projecting and reporting


def seed_plan(results: list[dict], p: config.Params, mean_length: float) -> dict:
    """Wall time of the seed's plan at Alpaca scale, projected from the measured rates."""
    rate = {r["variant"]: r["tokens_per_s"] for r in results if "recipe" in r}  # params.yaml as it is
    gens = [r for r in results if "answers" in r]
    if not {"qlora", "galore"} <= set(rate) or not gens:
        return {}
    gen = min(gens, key=lambda r: r["seconds"] / r["answers"])
    epoch_tokens = SEED_PLAN_EXAMPLES * mean_length
    trained = {n: m for n, m in p.methods.items() if n in ("qlora", "galore", "hybrid")}
    parts = {f"train {n}": m.epochs * epoch_tokens / rate[m.recipe] for n, m in trained.items()}
    parts["evaluate"] = (len(trained) + 1) * gen["seconds"] * 2000 / gen["answers"]  # + the base model
    return {
        "examples": SEED_PLAN_EXAMPLES,
        "epoch_tokens": round(epoch_tokens),
        "seconds": {k: round(v) for k, v in parts.items()},
        "total_minutes": round(sum(parts.values()) / 60, 1),
    }


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


def markdown(results: list[dict], peer: list[dict], plan: dict, env: dict, setup: dict) -> str:
    stock = {"qlora": "qlora", "galore": "galore"}
    peer_by = {r["method"]: r for r in peer if "tokens_per_s" in r}
    versions = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "device"))
    lines = [
        f"Measured {env['date']} on {env['device']}; {versions}.",
        "",
        f"Model: random weights of the {setup['shape']} shape. Data: `{setup['data']}` through the chat "
        f"template, sequences up to {setup['max_length']} tokens (data.max_length). {_step_sizes(results)} "
        "as `dvc repro` makes them (methods.*.batch_size x grad_accum, passes of its micro_batch_tokens).",
        "",
        "```",
        setup["command"] or "python -m ftbench bench ...",
        "```",
        "",
        "| variant | rows/step | tokens/s | MFU | NVML peak GiB | torch peak GiB | passes/step | "
        "stock tokens/s | stock NVML GiB | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "recipe" not in r:
            continue
        s = peer_by.get(stock.get(r["variant"].split(":")[0], ""), {})
        ratio = f"{r['tokens_per_s'] / s['tokens_per_s']:.1f}x" if s else ""
        lines.append(
            f"| {r['variant']} | {r['rows_per_step']:g} | {r['tokens_per_s']:,} | {r['mfu']} | "
            f"{r['nvml_peak_gib']} | {r['torch_peak_gib']} | {r['forward_passes_per_step']} | "
            f"{s.get('tokens_per_s', '')} | {s.get('nvml_peak_gib', '')} | {ratio} |"
        )
    for r in results:
        if "answers" in r:
            lines += [
                "",
                f"Generation ({r['variant']}): {r['answers']} greedy answers of at most "
                f"{r['max_new_tokens']} new tokens in {r['seconds']} s ({r['new_tokens_per_s']:,} new "
                f"tokens/s), NVML peak {r['nvml_peak_gib']} GiB.",
            ]
    if plan:
        lines += [
            "",
            f"Seed plan at Alpaca scale ({plan['examples']:,} examples, {plan['epoch_tokens']:,} tokens an "
            "epoch), "
            f"projected from these rates: {plan['total_minutes']} minutes "
            f"({', '.join(f'{k} {v} s' for k, v in plan['seconds'].items())}).",
        ]
    lines += ["", "Raw results, one JSON line per variant:", "", "```"]
    lines += [json.dumps(r) for r in [env, setup, *results, *peer]] + ["```", ""]
    return "\n".join(lines)


def _step_sizes(results: list[dict]) -> str:
    """'Optimizer steps of 16 rows, about 2,600 tokens (galore: 8 rows, about 1,300 tokens)': the first
    training variant's size, then each variant whose size differs."""
    sizes = [(r["variant"], r["rows_per_step"], r["tokens_per_step"]) for r in results if "recipe" in r]
    if not sizes:
        return "No training variant"
    _, rows, tokens = sizes[0]
    others = [f"{v}: {n:g} rows, about {t:,} tokens" for v, n, t in sizes[1:] if n != rows]
    return f"Optimizer steps of {rows:g} rows, about {tokens:,} tokens" + (
        f" ({'; '.join(others)})" if others else ""
    )


def _device_name() -> str:
    return (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or 'cpu'})"
    )


def _version(package: str) -> str:
    try:
        return version(package)
    except Exception:  # not installed: the table says so
        return "absent"


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.rebuild:
        lines = [json.loads(x) for x in args.rebuild.read_text().splitlines() if x.startswith('{"')]
        return write_markdown(lines, args)
    if not args.tokenizer:
        raise UserError("bench: --tokenizer is required (a tokenizer folder such as models/base)")
    configure_attention()
    p = config.load(args.params)
    if args.eval_answers is None:
        args.eval_answers = p.data.sizes.test
    first = next(iter(p.data.datasets.values()))
    setup = {k: getattr(args, k) for k in SETUP_KEYS} | {
        "data": args.data or first.source,
        "max_length": p.data.max_length,
    }
    lines = [{"env": environment()}, {"setup": setup}]
    for line in lines:
        print(json.dumps(line), flush=True)
    tokenizer = load_tokenizer(args.tokenizer)
    splits = dataset_splits(p, args.data, tokenizer)
    rows = splits["train"]
    with tempfile.TemporaryDirectory() as tmp:
        base = build_model(args.shape, tokenizer, Path(tmp) / "base")
        runs = [(v, lambda v=v: bench_training(v, p, base, rows, args)) for v in args.variants]
        if args.eval_answers:
            batches = args.eval_batch or [p.evaluate.batch_size]
            runs += [
                (
                    f"generate (batch {b})",
                    lambda b=b: bench_generation(base, splits["test"], tokenizer, p, b, args),
                )
                for b in batches
            ]
        for label, measure in runs:
            lines.append(_or_out_of_memory(label, measure))
            print(json.dumps(lines[-1]), flush=True)
    plan = seed_plan(lines, p, _mean_length(rows))
    lines.append({"seed_plan": plan})
    print(json.dumps(lines[-1]), flush=True)
    if args.markdown:
        write_markdown(lines, args)


def write_markdown(lines: list[dict], args) -> None:
    """BENCHMARKS.md from the bench's JSON lines and, with --peer, peer_bench.py's."""
    if not args.markdown:
        raise UserError("bench: --rebuild needs --markdown FILE")
    peer_lines = args.peer.read_text().splitlines() if args.peer else []
    peer = [json.loads(x) for x in peer_lines if x.startswith('{"')]
    env = next(x["env"] for x in lines if "env" in x)
    setup = next(x["setup"] for x in lines if "setup" in x)
    plan = next((x["seed_plan"] for x in lines if "seed_plan" in x), {})
    results = [x for x in lines if "variant" in x]
    table = f"{START}\n{markdown(results, peer, plan, env, setup)}{END}\n"
    old = args.markdown.read_text() if args.markdown.exists() else ""
    if START in old and END in old:  # update the measured part, keep the prose around it
        table = old[: old.index(START)] + table + old[old.index(END) + len(END) + 1 :]
    with atomic_path(args.markdown) as tmp:
        tmp.write_text(table)


def _mean_length(rows: list[dict]) -> float:
    return sum(len(r["input_ids"]) for r in rows) / len(rows)
