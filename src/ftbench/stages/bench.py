"""`ftbench bench`: speed and memory of the pipeline's own training and generation code on a model of a
given shape (ftbench.benchmark.measure), and its table (ftbench.benchmark.table).

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
import json
import tempfile
from pathlib import Path

from ftbench.benchmark.measure import (
    SHAPES,
    bench_generation,
    bench_training,
    build_model,
    dataset_splits,
    environment,
    mean_length,
    or_out_of_memory,
)
from ftbench.benchmark.table import seed_plan, write_markdown
from ftbench.common import commands, config
from ftbench.common.errors import UserError
from ftbench.loading import configure_attention, load_tokenizer

SETUP_KEYS = ("shape", "steps", "warmup", "command")


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
            lines.append(or_out_of_memory(label, measure))
            print(json.dumps(lines[-1]), flush=True)
    plan = seed_plan(lines, p, mean_length(rows))
    lines.append({"seed_plan": plan})
    print(json.dumps(lines[-1]), flush=True)
    if args.markdown:
        write_markdown(lines, args)
