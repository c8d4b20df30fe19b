"""Seconds per optimizer step with cuDNN attention on and off, then a torch.profiler table of two QLoRA
steps: the measurements behind BENCHMARKS.md's "what bounds it" (h200-profile.txt). GPU only.

usage: python bench/profile_steps.py TOKENIZER_DIR DATA_FILE
"""

import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ftbench import bench, config, recipes, train
from ftbench.loading import load_tokenizer

STEP_TOKENS = 8192


def timed_steps(model, optimizer, steps, p) -> float:
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for s in steps:
        train.train_step(model, optimizer, scheduler, trainable, s, p, 0)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def run(variant: str, base: Path, rows: list[dict], p0, n: int = 5, cudnn: bool = True, table: bool = False):
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    name, p = bench.with_overrides(p0, variant)
    method = p.methods[name]
    steps = [
        train.by_tokens([s], p.train.micro_batch_tokens) for s in bench.token_steps(rows, n + 2, STEP_TOKENS)
    ]
    model, optimizer, _ = recipes.get(method.recipe).setup(base, method, p, 0)
    timed_steps(model, optimizer, steps[:2], p)  # warm-up
    if table:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timed_steps(model, optimizer, steps[2:4], p)
        for key in ("self_cuda_time_total", "self_cpu_time_total"):
            print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
        return
    seconds = timed_steps(model, optimizer, steps[2:], p)
    passes = sum(len(s) for s in steps[2:])
    result = dict(
        variant=variant, cudnn=cudnn, s_per_step=round(seconds / n, 3), s_per_pass=round(seconds / passes, 3)
    )
    print(json.dumps({**result, "tok_s": round(n * STEP_TOKENS / seconds)}), flush=True)


def main() -> None:
    tokenizer = load_tokenizer(sys.argv[1])
    rows = bench.dataset_rows(sys.argv[2], tokenizer, 512)
    base = bench.build_model("gemma3-1b", tokenizer, Path("/tmp/profile-base"))
    p = config.load()
    qlora_v = "qlora:train.micro_batch_tokens=4096,train.fused_cross_entropy=false"
    galore_v = "galore:train.micro_batch_tokens=4096,train.fused_cross_entropy=false"
    for variant in (qlora_v, galore_v):
        for cudnn in (True, False):
            run(variant, base, rows, p, cudnn=cudnn)
    run(qlora_v, base, rows, p, table=True)


if __name__ == "__main__":
    main()
