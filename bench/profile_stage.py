"""Where a stage's GPU time goes: one ftbench command run whole under torch.profiler, its kernels summed.

    python bench/profile_stage.py OUT train qlora      # in a study folder whose earlier stages ran

Writes OUT/<command>-<args>.txt: the profiled wall time, the device's kernel time in it (how busy the GPU
was), that time by kind of kernel (matmuls, 4-bit dequantization, attention, the output layer's loss,
optimizer, SVD, element-wise and the rest) and the 25 kernels that took most of it. The command runs as
`dvc repro` runs it (ftbench.cli: its GPU claim, its errors), so its outputs are the stage's own; the
profiler slows it, so read shares, not its speed.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ftbench import cli

# kernel names (CUDA's, as the profiler lists them) by what they do; the first pattern that matches wins
KINDS = [
    ("4-bit dequantize / gemv (bitsandbytes)", r"kDequantize|kgemm_4bit|kQuantize|bnb"),
    ("SVD / eigen (GaLore refresh)", r"svd|syev|eigh|geqrf|orgqr|potrf|cusolver|ormqr|larft|trsm"),
    ("matmul", r"gemm|cutlass|nvjet|sm90_|xmma|matmul|cublas"),
    ("attention", r"flash|fmha|attention|sdpa|softmax_warp"),
    ("loss (output layer's cross-entropy)", r"cross_entropy|log_softmax|nll_loss|liger|_fused_linear"),
    ("optimizer", r"adam|foreach|multi_tensor|lerp|addcdiv|addcmul"),
    ("norm / activation / rope", r"rms|norm|gelu|geglu|rope|rotary"),
    ("reduce", r"reduce"),
    ("copy / cast / fill", r"copy|cast|fill|memcpy|memset|cat|index|gather|scatter"),
    ("element-wise", r"elementwise|vectorized|unrolled"),
]


def kind(name: str) -> str:
    return next((k for k, pattern in KINDS if re.search(pattern, name, re.IGNORECASE)), "other")


def summary(prof, wall_s: float, label: str) -> str:
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    busy_s = sum(e.self_device_time_total for e in kernels) / 1e6
    if not kernels:
        return f"# {label}\nprofiled wall {wall_s:.1f} s; no GPU kernels ran (no CUDA device?)\n"
    by_kind: dict[str, float] = {}
    for e in kernels:
        k = kind(e.key)
        by_kind[k] = by_kind.get(k, 0.0) + e.self_device_time_total / 1e6
    lines = [
        f"# {label}",
        f"profiled wall {wall_s:.1f} s; GPU kernels {busy_s:.1f} s ({busy_s / wall_s:.0%} of the wall, "
        f"{sum(e.count for e in kernels):,} launches)",
        "",
        "| kind | kernel s | share of kernel time |",
        "|---|---|---|",
    ]
    for name, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.2f} | {seconds / busy_s:.1%} |")
    lines += ["", "| kernel | kind | calls | s | share |", "|---|---|---|---|---|"]
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:25]:
        s = e.self_device_time_total / 1e6
        lines.append(f"| `{e.key[:90]}` | {kind(e.key)} | {e.count} | {s:.2f} | {s / busy_s:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: python bench/profile_stage.py OUT COMMAND [ARGS...]  (e.g. OUT train qlora)")
    out, command, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    cli.prepare_process()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        cli.run(lambda rest: cli.stage(command, rest), args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    label = "-".join([command, *args])
    text = summary(prof, time.perf_counter() - start, f"ftbench {' '.join([command, *args])}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
