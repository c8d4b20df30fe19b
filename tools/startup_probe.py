"""Where a stage's start-up goes: the seconds from the interpreter's start to each step a train stage takes
before its resource record begins (the `startup_s` of metrics/resources: 12-21 s a stage on the H200,
5-6 s on the 2-core CPU), in the order the stage takes them.

On a GPU it also says after which step the process first holds GPU memory (NVML's device memory used
over its reading at the start, and whether NVML lists this process): whether the imports alone start a
CUDA context, or only the first tensor does (what decides when the warm server's spare may import).

usage: python tools/startup_probe.py   (prints one JSON line; run it in a fresh process, as DVC does)
"""

from __future__ import annotations

import importlib
import json
import os
import time

import psutil

STEPS = ("torch", "transformers", "peft", "bitsandbytes", "galore_torch", "ftbench.stages.train")


def gpu_reader():
    """A function giving (device MiB used over now's, whether NVML lists this process), or None
    without a GPU. NVML itself starts no CUDA context."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no driver, no GPU
        return None
    used = pynvml.nvmlDeviceGetMemoryInfo(handle).used

    def read() -> tuple[int, bool]:
        mine = any(p.pid == os.getpid() for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
        return (pynvml.nvmlDeviceGetMemoryInfo(handle).used - used) // 2**20, mine

    return read


def main() -> None:
    born = psutil.Process().create_time()
    gpu = gpu_reader()
    since_start = {"interpreter": round(time.time() - born, 2)}
    gpu_after = {}
    for module in STEPS:
        importlib.import_module(module)
        since_start[module] = round(time.time() - born, 2)
        if gpu:
            gpu_after[module] = gpu()
    import torch

    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # the CUDA context, as the stage's first tensor on the GPU makes it
        since_start["cuda context"] = round(time.time() - born, 2)
        gpu_after["cuda context"] = gpu()
    steps = list(since_start)
    each = {
        s: round(since_start[s] - (since_start[steps[k - 1]] if k else 0.0), 2) for k, s in enumerate(steps)
    }
    result = {"seconds_since_start": since_start, "seconds_each": each, "gpu_mib_and_listed": gpu_after}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
