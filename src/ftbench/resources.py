"""Wall time and peak memory of a stage, written to metrics/resources/<stage>.json.

GPU memory is sampled from NVML in a background thread (device memory used minus the baseline before
the stage's work), beside torch's own peak; on a machine without a GPU the GPU fields are null and the
process's peak resident memory still tells the memory story.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator

import torch

from ftbench import paths
from ftbench.atomic import write_json

GIB = 2**30
NVML_PERIOD_S = 0.01


class NvmlPeak:
    """Peak device memory used on GPU 0 above the baseline at start, sampled every 10 ms."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            self.baseline = self._used()
        except Exception:  # no driver, no GPU or no pynvml: GPU fields stay null
            self._nvml = None

    def _used(self) -> int:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used

    def _loop(self) -> None:
        while not self._stop.wait(NVML_PERIOD_S):
            self.peak = max(self.peak or 0, self._used() - self.baseline)

    def __enter__(self) -> NvmlPeak:
        if self._nvml:
            self.peak = 0
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nvml:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._used() - self.baseline)


@contextlib.contextmanager
def measure(stage: str) -> Iterator[dict]:
    """Time and watch the block; the yielded dict takes extra fields (tokens trained, ...)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    extra: dict = {}
    cpu0, t0 = os.times(), time.perf_counter()
    with NvmlPeak() as nvml:
        yield extra
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    record = {
        "stage": stage,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3),
        "peak_gpu_gib": None if nvml.peak is None else round(nvml.peak / GIB, 3),
        "torch_peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3) if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        **extra,
    }
    if "tokens" in extra:
        record["tokens_per_s"] = round(extra["tokens"] / extra.get("train_s", wall), 1)
    write_json(paths.RESOURCES / f"{stage}.json", record)
