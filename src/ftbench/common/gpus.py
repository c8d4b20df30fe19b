"""The GPUs a stage runs on, claimed before CUDA starts: one lock file per device, so that stages running
side by side (`dvc queue start -j N`, or several `dvc repro` on one machine) never share a GPU.

A stage that trains or evaluates takes `resources.gpus` devices (`auto`: all of them) that no other stage
holds, waits while there are not enough, and sees only its own (CUDA_VISIBLE_DEVICES). The locks are
`flock`s: the kernel releases them when the process ends, however it ends, so a killed stage frees its
GPUs. A machine without GPUs claims nothing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

from ftbench.common.errors import UserError
from ftbench.common.progress import LOG

DEVICES_ENV = "FTBENCH_GPUS"  # the devices stages share out, e.g. "0,1,2,3" (default: every GPU NVML sees)
LOCKS_ENV = "FTBENCH_GPU_LOCKS"  # the folder of the lock files, shared by every stage of the machine
WAITED_ENV = "FTBENCH_GPU_WAIT_S"  # seconds this stage waited for its GPUs (its resource record's gpu_wait_s)
POLL_S = 2.0


def pool() -> list[str]:
    """The device ids stages share out: FTBENCH_GPUS, else the CUDA_VISIBLE_DEVICES the stage was started
    with, else every GPU NVML counts (none on a machine without NVIDIA's driver)."""
    for name in (DEVICES_ENV, "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            return [d.strip() for d in os.environ[name].split(",") if d.strip()]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no GPU: NVML's errors all mean there is nothing to claim
        return []


def lock_dir() -> Path:
    folder = Path(os.environ.get(LOCKS_ENV) or Path(tempfile.gettempdir()) / f"ftbench-gpus-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def claim(devices: list[str], wanted: int | str, label: str) -> list[int]:
    """Take `wanted` of `devices` (the pool; `auto`: all) that no other process holds, waiting while there
    are not enough, and make them this process's CUDA_VISIBLE_DEVICES. Returns the open lock files: they
    must stay open as long as the stage runs. Under torchrun (the ranks of a stage that claimed them) and
    without GPUs it takes nothing."""
    if not devices or "LOCAL_RANK" in os.environ:
        return []
    count = len(devices) if wanted == "auto" else int(wanted)
    if count > len(devices):
        raise UserError(
            f"resources.gpus: {wanted}, but this machine has {len(devices)} GPU(s) ({','.join(devices)}); "
            f"lower resources.gpus"
        )
    folder, started, said = lock_dir(), time.monotonic(), False
    while True:
        held = try_lock(folder, devices, count)
        if held:
            break
        if not said:
            LOG.info(
                f"{label}: waiting for {count} free GPU(s) of {','.join(devices)}: the others are held by "
                f"stages running beside it (lock files in {folder})"
            )
            said = True
        time.sleep(POLL_S)
    ids = [device for device, _ in held]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    os.environ[WAITED_ENV] = f"{time.monotonic() - started:.2f}"
    if said:
        LOG.info(f"{label}: GPU(s) {','.join(ids)} free, starting")
    return [fd for _, fd in held]


def try_lock(folder: Path, devices: list[str], count: int) -> list[tuple[str, int]]:
    """`count` of `devices` locked, or none (what was taken is let go: a stage never holds part of what it
    waits for, so two stages that want two GPUs each cannot hold one each forever)."""
    held: list[tuple[str, int]] = []
    for device in devices:
        fd = os.open(folder / f"gpu{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a user looking at the folder
        held.append((device, fd))
        if len(held) == count:
            return held
    for _, fd in held:
        os.close(fd)
    return []
