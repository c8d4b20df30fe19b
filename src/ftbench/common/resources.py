"""What a stage costs: wall time per phase, peak memory, tokens/s, MFU and energy.

A sampler thread reads, every 10 ms, NVML's device memory used (minus the baseline before the stage's
work) and, every 100 ms, this process's own GPU memory where NVML lists it, GPU utilisation, and the
resident memory of the process tree (psutil). torch's own peaks are read at the end (reset once, at
stage start). On a machine without a GPU the GPU fields are null and the rest still holds. The record
goes to metrics/resources/<stage>.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import psutil
import torch

from ftbench.common import distributed, gpus, paths
from ftbench.common.atomic import write_json
from ftbench.common.progress import LOG

GIB = 2**30
PERIOD_S = 0.01
FULL_EVERY = 10  # samples between the costlier readings (process tree, per-process GPU, utilisation)
# Dense bf16 tensor-core peaks by the vendors' datasheets, TFLOP/s; `resources.peak_tflops` overrides.
# A name matches as whole words of the device name ("L4" is not "L40"). T4 and V100 have no bf16
# tensor cores: they are left out, so MFU is not reported there unless resources.peak_tflops sets it.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


# what a stage's numbers depend on; each record names their versions, so a report made on another machine
# says what the stages ran on
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "galore-torch",
    "sacrebleu",
    "rouge-score",
    "dvc",
)


def package_versions() -> str:
    """The versions of the packages a stage's numbers depend on, in one line (the report's provenance)."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return ", ".join(versions)


def environment_digest() -> str:
    """A digest of every installed package's name and version: two records with the same digest ran on the
    same environment (the lock's, after `make install`), libraries outside PACKAGES included."""
    installed = sorted(f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions())
    return hashlib.sha256("\n".join(installed).encode()).hexdigest()[:16]


def device_name() -> str:
    """The GPU by name; on a CPU its model, the instruction set torch's kernels use and their threads: on the
    CPU these decide how float sums are split, and so the last digits of a loss."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    return f"cpu: {model}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return []


class Sampler:
    """Peaks of memory and mean GPU utilisation, read in a background thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak_rss = 0
        self.gpu = _Nvml.open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree_rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def sample(self, full: bool = True) -> None:
        if full:
            self.peak_rss = max(self.peak_rss, self._tree_rss())
        if self.gpu:
            self.gpu.sample(full)

    def _loop(self) -> None:
        # Device memory every 10 ms (one cheap NVML call); the process-tree walk and the other NVML
        # queries every 10th time: their Python work competes with the training loop for the GIL,
        # and a launch-bound loop on a GPU feels every millisecond of it.
        tick = 0
        while not self._stop.wait(PERIOD_S):
            tick += 1
            self.sample(full=tick % FULL_EVERY == 0)

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def nvml_uuid(index: int) -> str:
    """NVML's name for torch's CUDA device `index`. NVML numbers every GPU of the machine, torch only those
    CUDA_VISIBLE_DEVICES shows: under CUDA_VISIBLE_DEVICES=1, torch's device 0 is NVML's device 1, and
    reading NVML's device 0 measured another GPU (seen on the two-GPU H200 machine). The UUID is the
    same in both."""
    return f"GPU-{torch.cuda.get_device_properties(index).uuid}"


class _Nvml:
    """NVML readings of the current GPU; `open()` is None where there is no GPU, driver or pynvml."""

    def __init__(self, nvml, handle) -> None:
        self.nvml, self.handle = nvml, handle
        self.baseline = self._used()
        self.peak_used = 0
        self.open_phases: dict[str, int] = {}  # each phase running now, and its peak so far
        self.peak_process: int | None = None
        self.util: list[int] = []
        self.energy0 = self._energy()

    @classmethod
    def open(cls) -> _Nvml | None:
        if not torch.cuda.is_available():
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            return cls(pynvml, pynvml.nvmlDeviceGetHandleByUUID(nvml_uuid(torch.cuda.current_device())))
        except Exception:  # pynvml raises its own NVMLError family, or the module is absent
            return None

    def _used(self) -> int:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used

    def _energy(self) -> int | None:
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)  # mJ since driver load
        except Exception:  # not supported on this GPU
            return None

    def _process_used(self) -> int | None:
        try:
            for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    return p.usedGpuMemory
        except Exception:  # containers often hide other PIDs; NVML then reports nothing usable
            return None
        return None

    def sample(self, full: bool = True) -> None:
        used = self._used() - self.baseline
        self.peak_used = max(self.peak_used, used)
        for name, peak in list(self.open_phases.items()):  # phases may nest (evaluate's merge in its load)
            self.open_phases[name] = max(peak, used)
        if not full:
            return
        mine = self._process_used()
        if mine is not None:
            self.peak_process = max(self.peak_process or 0, mine)
        self.util.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def fields(self) -> dict:
        end = self._energy()
        return {
            "peak_gpu_gib": round(self.peak_used / GIB, 3),
            "peak_gpu_process_gib": None if self.peak_process is None else round(self.peak_process / GIB, 3),
            "gpu_util_mean": round(sum(self.util) / len(self.util), 1) if self.util else None,
            "energy_j": None
            if end is None or self.energy0 is None
            else round((end - self.energy0) / 1000, 1),
        }


class Record(dict):
    """The stage's record; `phase()` times a named part of the work and, on a GPU, its NVML peak (which
    phase holds the stage's peak: training, or a validation or generation after it)."""

    gpu: _Nvml | None = None  # the stage's NVML readings, set by measure()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        if self.gpu:
            self.gpu.open_phases[name] = 0
            self.gpu.sample(full=False)
        try:
            yield
        finally:
            self.setdefault("phases_s", {})
            self["phases_s"][name] = round(self["phases_s"].get(name, 0.0) + time.perf_counter() - t0, 2)
            if self.gpu:
                self.gpu.sample(full=False)
                peaks = self.setdefault("phase_peak_gpu_gib", {})
                peaks[name] = max(peaks.get(name, 0.0), round(self.gpu.open_phases.pop(name) / GIB, 3))


def synced_clock() -> float:
    """perf_counter after the GPU's queued work is done, so an interval measures that work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def cap_gpu_memory(max_gib: float | None) -> None:
    """Let the stage use at most `max_gib` of the GPU, to check a claim like 'fits in 8 GB' directly."""
    if max_gib and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, max_gib * GIB / total))


def peak_tflops(override: float | None) -> float | None:
    """One GPU's dense bf16 peak: `resources.peak_tflops`, else this GPU's entry in PEAK_TFLOPS."""
    if override or not torch.cuda.is_available():
        return override
    name = torch.cuda.get_device_name()
    peak = known_peak(name)
    if peak is None:
        LOG.warning(f"no bf16 peak known for {name}; MFU is not reported (set resources.peak_tflops)")
    return peak


def known_peak(device_name: str) -> float | None:
    """The PEAK_TFLOPS entry whose name appears in `device_name` as whole words (at most one does)."""
    return next((v for k, v in PEAK_TFLOPS.items() if re.search(rf"\b{re.escape(k)}\b", device_name)), None)


def mfu(flops_per_s: float, peak: float | None, devices: int = 1) -> float | None:
    """Model FLOPs utilisation: the FLOP/s achieved by all `devices` over their summed dense bf16 peak."""
    return None if not peak else round(flops_per_s / (devices * peak * 1e12), 4)


def matmul_params(cfg) -> tuple[int, int]:
    """(decoder matmul weights, output-layer weights) of a decoder-only transformer config."""
    h = cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    attention = 2 * h * head_dim * (cfg.num_attention_heads + cfg.num_key_value_heads)
    return cfg.num_hidden_layers * (attention + 3 * h * cfg.intermediate_size), cfg.vocab_size * h


def training_flops(cfg, weight_grads: bool, tokens: int, answer_tokens: int) -> float:
    """Matmul FLOPs of training: 2 forward + 2 input-grad (+ 2 weight-grad) per weight and token.

    The output layer runs on answer tokens only (ftbench never forms prompt logits); attention's
    quadratic term is left out, as in the usual MFU accounting.
    """
    body, head = matmul_params(cfg)
    per_weight = 6 if weight_grads else 4
    return per_weight * (body * tokens + head * answer_tokens)


def _per_device(record: Record) -> None:
    """With several data-parallel ranks: each rank's memory peaks, and their total, on every record."""
    keys = ("device", "peak_gpu_gib", "torch_peak_allocated_gib", "peak_rss_gib")
    ranks = distributed.gather({k: record.get(k) for k in keys})
    if len(ranks) > 1:
        record["per_device"] = ranks
        for k in ("peak_gpu_gib", "peak_rss_gib"):
            values = [r[k] for r in ranks if r[k] is not None]
            record[f"{k}_total"] = round(sum(values), 3) if values else None


@contextlib.contextmanager
def measure(stage: str, write: bool = True) -> Iterator[Record]:
    """Watch the block and, if `write`, save metrics/resources/<stage>.json when it succeeds."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    me = psutil.Process()
    record = Record(stage=stage)
    # from the process's start to here: interpreter, imports, CUDA start-up and params; with started_at and
    # finished_at it splits a `dvc repro`'s time between the stages, their start-up and DVC (stage_table.py)
    started_at = time.time()
    waited = float(os.environ.get(gpus.WAITED_ENV, 0))  # for GPUs held by stages beside it: not start-up
    # (torchrun's ranks started after their launcher's wait)
    record["startup_s"] = round(
        started_at - me.create_time() - (0 if "LOCAL_RANK" in os.environ else waited), 2
    )
    if gpus.WAITED_ENV in os.environ:
        record.update(gpus=os.environ.get("CUDA_VISIBLE_DEVICES"), gpu_wait_s=round(waited, 2))
    cpu0, t0 = me.cpu_times(), time.perf_counter()
    with Sampler() as sampler:
        record.gpu = sampler.gpu
        yield record
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu1 = me.cpu_times()
    record.update(
        wall_s=round(wall, 2),
        started_at=round(started_at, 2),
        finished_at=round(started_at + wall, 2),
        cpu_s=round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
        peak_rss_gib=round(sampler.peak_rss / GIB, 3),
        peak_gpu_gib=None,
        torch_peak_allocated_gib=round(torch.cuda.max_memory_allocated() / GIB, 3) if cuda else None,
        torch_peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 3) if cuda else None,
        device=device_name(),
        packages=package_versions(),
        environment=environment_digest(),
    )
    if sampler.gpu:
        record.update(sampler.gpu.fields())
    _per_device(record)
    if write:
        write_json(paths.RESOURCES / f"{stage}.json", dict(record))
