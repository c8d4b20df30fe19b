"""Data parallelism over several GPUs (`resources.gpus`), with torch.distributed.

A stage asked for N > 1 GPUs re-launches itself under torchrun (`torch.distributed.run`), one process
per GPU: NCCL between GPUs, gloo between CPU processes (how the tests check it). Every rank holds the
whole model (QLoRA: its own 4-bit copy) and takes a share of each optimizer step's rows. The decoder,
which holds every trainable weight, is wrapped in PyTorch's DistributedDataParallel: its buckets
all-reduce gradients while the backward pass still runs. Ranks may cut their share into different
numbers of packed passes, so every pass but a rank's last runs under `no_sync()`: each rank syncs once
a step, on its final backward. Rank 0 alone writes outputs and logs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ftbench.common import config


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def processes(p: config.Params) -> int:
    """How many ranks `resources.gpus` asks for: `auto` is every visible GPU (1 on a CPU machine)."""
    if p.resources.gpus == "auto":
        return max(1, torch.cuda.device_count())
    return p.resources.gpus


def launch_or_init(p: config.Params, command: str, argv: list[str]) -> None:
    """Outside torchrun with N > 1: run the stage under torchrun and exit with its status.
    Inside torchrun: join the process group (NCCL on GPUs, gloo on CPUs)."""
    n = processes(p)
    if "LOCAL_RANK" in os.environ:
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            # Leave together and tear the group down: a rank exiting with gloo's threads still up (rank 1
            # while rank 0 writes outputs) can abort with "terminate called without an active exception".
            atexit.register(_leave)
        return
    if n > 1:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import get_args_parser, run

        ranks = ["--standalone", f"--nproc-per-node={n}", "-m", "ftbench", command, *argv]
        args = get_args_parser().parse_args(ranks)
        try:
            run(args)
        except ChildFailedError as err:  # the ranks printed their own one-line error
            code = next(iter(err.failures.values())).exitcode
            sys.exit(code if code > 0 else 1)
        sys.exit(0)


def _leave() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(rows: list[dict]) -> list[dict]:
    """This rank's share: rows dealt round-robin, longest first, so ranks get similar token counts."""
    if world_size() == 1:
        return rows
    rows = sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True)
    return rows[rank() :: world_size()]


def data_parallel(model, decoder: torch.nn.Module) -> DistributedDataParallel | None:
    """The model's decoder (the part every trainable weight lies in) wrapped in DDP when several ranks
    train (see the module docstring), else None. The wrapper is kept beside the model rather than in it,
    so that the model's parameter names (saved weights, checkpoints) stay those of one process."""
    if world_size() == 1:
        return None
    inside = {id(t) for t in decoder.parameters()}
    if any(t.requires_grad and id(t) not in inside for t in model.parameters()):
        raise RuntimeError("a trainable weight lies outside the decoder: DDP would not sync it")
    return DistributedDataParallel(
        decoder,
        device_ids=[torch.cuda.current_device()] if torch.cuda.is_available() else None,
        # every rank loaded the same weights and seeded its adapters alike (the tests compare curves):
        # no broadcast of the frozen base at start-up
        init_sync=False,
        broadcast_buffers=False,
    )


def sync_gradients(ddp: DistributedDataParallel | None, last: bool):
    """Context for one pass through `ddp` (None: one process): all-reduce its gradients only on the
    step's last pass."""
    return contextlib.nullcontext() if ddp is None or last else ddp.no_sync()


def sum_scalars(*values: float) -> list[float]:
    """Sums over ranks of a few numbers (loss, token counts), in one collective."""
    if world_size() == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(value: object) -> list[object]:
    """Every rank's `value`, in rank order (on every rank)."""
    if world_size() == 1:
        return [value]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def check_same(tensors: list[torch.Tensor], what: str) -> None:
    """Raise unless every rank holds the same tensors as rank 0 (GaLore's projections)."""
    if world_size() == 1:
        return
    worst = 0.0
    for t in tensors:
        reference = t.clone()
        dist.broadcast(reference, src=0)
        worst = max(worst, (t - reference).abs().max().item())
    worst = max(gather(worst))
    if worst > 1e-5:
        raise RuntimeError(f"{what} differ across ranks (max difference {worst:.2e})")
