"""Where a stage's start-up goes: the seconds from the interpreter's start to each step a train stage takes
before its resource record begins (the `startup_s` of metrics/resources: 12-21 s a stage on the H200,
5-6 s on the 2-core CPU), in the order the stage takes them.

usage: python bench/startup_probe.py   (prints one JSON line; run it in a fresh process, as DVC does)
"""

from __future__ import annotations

import importlib
import json
import time

import psutil

STEPS = ("torch", "transformers", "peft", "bitsandbytes", "galore_torch", "ftbench.train")


def main() -> None:
    born = psutil.Process().create_time()
    since_start = {"interpreter": round(time.time() - born, 2)}
    for module in STEPS:
        importlib.import_module(module)
        since_start[module] = round(time.time() - born, 2)
    import torch

    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # the CUDA context, as the stage's first tensor on the GPU makes it
        since_start["cuda context"] = round(time.time() - born, 2)
    steps = list(since_start)
    each = {
        s: round(since_start[s] - (since_start[steps[k - 1]] if k else 0.0), 2) for k, s in enumerate(steps)
    }
    print(json.dumps({"seconds_since_start": since_start, "seconds_each": each}))


if __name__ == "__main__":
    main()
