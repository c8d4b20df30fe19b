"""`make image-check`, inside the image: a `--shape tiny` bench through the `ftbench` command on the GPU,
then checks that the image's default GPU path really ran (docs/container.md).

The bench alone would pass on a broken image: without CUDA it runs on the CPU, and without liger-kernel
the fused loss quietly falls back to the plain one. So its JSON lines are read back: a GPU device,
liger-kernel installed, and every training variant's fused (Triton) loss computed and equal to the
plain loss. A missing C compiler fails the bench itself, when Triton builds its launcher.

usage (from the repo root, in the container): python tools/image_check.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# a few seconds of work: the point is that every GPU kernel (NF4, GaLore, liger, generation) runs once
BENCH_ARGS = ["--shape", "tiny", "--steps", "2", "--warmup", "1"]
BENCH_ARGS += ["--eval-answers", "8", "--eval-new-tokens", "16"]
FUSED_TOLERANCE = 1e-3  # the H200 runs differ by at most 1.2e-5 (BENCHMARKS.md)


def write_tokenizer(folder: Path) -> None:
    """The real Gemma 3 tokenizer from the embedded GGUF (as tests/conftest.py builds it): no hub needed."""
    from transformers import AutoTokenizer

    from ftbench.chat import ensure_chat_template
    from ftbench.stages.model import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ensure_chat_template(tokenizer)
    tokenizer.save_pretrained(folder)


def run_bench(tokenizer: Path) -> list[dict]:
    """The bench through the console script, its lines echoed as they come; its JSON lines returned."""
    command = ["ftbench", "bench", "--tokenizer", str(tokenizer), *BENCH_ARGS]
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as bench:
        for line in bench.stdout:
            print(line, end="", flush=True)
            if line.startswith("{"):
                lines.append(json.loads(line))
    if bench.returncode:
        sys.exit(f"image-check: `{' '.join(command)}` failed (exit {bench.returncode}), see above")
    return lines


def problems(lines: list[dict]) -> list[str]:
    """What shows that the GPU path did not run, from the bench's JSON lines."""
    env = next(line["env"] for line in lines if "env" in line)
    found = []
    if env["device"] == "CPU":
        found.append("no GPU in the container (docker run --gpus all, NVIDIA Container Toolkit)")
    if env["liger-kernel"] == "absent":
        found.append("liger-kernel is not installed: the image must install the `gpu` extra")
    training = [line for line in lines if "recipe" in line or "error" in line]
    if not training:
        found.append("the bench trained no variant")
    for line in training:
        diff = line.get("fused_loss_rel_diff")
        if "error" in line:
            found.append(f"{line['variant']}: {line['error']}")
        elif diff is None:
            found.append(f"{line['variant']}: no fused loss was computed (train.fused_cross_entropy off?)")
        elif diff > FUSED_TOLERANCE:
            found.append(f"{line['variant']}: fused loss differs from the plain loss by {diff}")
    return found


def main() -> None:
    if shutil.which("ftbench") is None:
        sys.exit("image-check: no `ftbench` command on PATH in the image")
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        lines = run_bench(Path(tmp))
    found = problems(lines)
    for problem in found:
        print(f"image-check: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print("image-check: passed (GPU, liger-kernel's Triton loss, ftbench command)")


if __name__ == "__main__":
    main()
