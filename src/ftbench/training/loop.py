"""The training loop: batches, the schedule, the optimizer steps, resumable from checkpoints.

A run's passes go through `Passes`: DDP's wrapper of the decoder when several ranks train, recorded CUDA
graphs on one GPU, the plain decoder otherwise. The run that made them holds them (no module keeps
state about a model), and drops the graphs when training ends.
"""

from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ftbench import packing, recipes
from ftbench.common import config, distributed
from ftbench.common.errors import UserError
from ftbench.common.progress import LOG, bar
from ftbench.loading import device
from ftbench.loss import answer_loss, answer_tokens, autocast, causal_lm, liger_available
from ftbench.training import checkpoint, graphs

LENGTH_POOL = 64  # micro-batches per pool that is sorted by length: little padding, order still random
PLACEHOLDER_ROW = {"input_ids": [0, 0], "prompt_len": 1}  # a two-token pass, for a rank with no rows


@dataclass
class Passes:
    """How a training pass runs the decoder: `ddp`, its DistributedDataParallel wrapper on several ranks
    (kept beside the model, so parameter names stay those of one process); `graphs`, its recorded CUDA
    graphs on one GPU (ftbench.training.graphs); the plain decoder where both are None."""

    ddp: torch.nn.Module | None = None
    graphs: graphs.Graphs | None = None

    @classmethod
    def setup(cls, model, method: config.MethodParams, p: config.Params, steps: list) -> Passes:
        return cls(
            distributed.data_parallel(model, causal_lm(model).model), graphs.record(model, method, p, steps)
        )

    def release(self, model) -> None:
        """Drop the graphs once the model has trained (graphs.release says why)."""
        if self.graphs is not None:
            graphs.release(model)
            self.graphs = None


def compile_layers(model, p: config.Params) -> None:
    """`train.compile`: torch.compile each decoder layer (one compiled graph shared by all layers), which
    fuses the small element-wise kernels whose launches, not the matmuls, bound the step time."""
    if p.train.compile:
        for layer in causal_lm(model).model.layers:
            layer.compile(dynamic=True)


def use_liger_kernels(model, p: config.Params) -> bool:
    """`train.liger_kernels`: liger-kernel's Triton RMSNorm, GeGLU and RoPE in place of transformers' eager
    ones. A step at the seed's batch is bound by kernel launches, not FLOPs (BENCHMARKS.md), and eager
    Gemma 3 launches 3-10 kernels for each of a layer's six norms, its GeGLU and its RoPE, forward and
    backward. liger's own dispatcher picks the model type's patch (the one HF Trainer's
    `use_liger_kernel` calls); the output layer and loss stay ours (`train.fused_cross_entropy`).
    Not under `train.compile`, which fuses these ops itself: dynamo fails on liger's autograd functions
    (seen on the H200 with torch 2.11). Returns whether the kernels are in, for the train record."""
    if not (p.train.liger_kernels and liger_available() and not p.train.compile):
        return False
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(
        model=causal_lm(model),
        rope=True,
        rms_norm=True,
        geglu=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
    )
    return True


# ---------------------------------------------------------------- batching


def chunks(items: list, size: int) -> list[list]:
    """`items` in consecutive groups of `size` (the last may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def micro_batches(rows: list[dict], batch_size: int, seed: int, epoch: int) -> list[list[dict]]:
    """Length-grouped micro-batches: shuffle, sort within pools of similar size, shuffle the batches."""
    rng = random.Random(seed * 1000 + epoch)
    order = rows[:]
    rng.shuffle(order)
    pool = batch_size * LENGTH_POOL
    batches = []
    for group in chunks(order, pool):
        batches += chunks(sorted(group, key=lambda r: len(r["input_ids"])), batch_size)
    rng.shuffle(batches)
    return batches


def optimizer_steps(
    rows: list[dict], method: config.MethodParams, p: config.Params, seed: int
) -> list[list[list[dict]]]:
    """All epochs' micro-batches grouped grad_accum at a time, capped at train.max_steps."""
    micro = [b for e in range(method.epochs) for b in micro_batches(rows, method.batch_size, seed, e)]
    steps = chunks(micro, method.grad_accum)
    steps = steps[: p.train.max_steps] if p.train.max_steps else steps
    if distributed.world_size() > 1:  # this rank's share of every step, in batch_size-row passes
        steps = [chunks(distributed.shard([r for m in s for r in m]), method.batch_size) for s in steps]
    budget = method.micro_batch_tokens
    # the loss is normalised by the step's answer tokens, so the gradient does not depend on the cut
    return [packing.passes([r for micro in s for r in micro], budget) for s in steps] if budget else steps


# ---------------------------------------------------------------- fitting


def schedule(name: str, optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """`train.schedule` after a linear warm-up: transformers' get_scheduler schedules (linear, cosine,
    constant_with_warmup), the same factors at every step. Not imported from transformers: its scheduler
    module imports peft, seconds of start-up for the GaLore and full-training stages that never use it."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if name == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        if name == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __enter__(self) -> StopRequest:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def fit(
    recipe: recipes.Recipe,
    model,
    optimizer,
    steps,
    label: str,
    p: config.Params,
    log,
    ckpt: tuple[Path, checkpoint.Fingerprint],
    passes: Passes | None = None,
) -> dict:
    """The training loop, resumable from `ckpt` (folder, fingerprint), its passes through `passes` (the
    plain decoder if None).

    `log(step, metrics)` gets loss, learning rate, grad norm and tokens/s. The returned progress holds
    the curve, tokens and training seconds of every step, those before a resume included, so a resumed
    run's tokens/s is that of the whole run; `resumed_train_s` is the part of them an earlier, stopped
    attempt spent (the stage's own wall time is this attempt's alone).
    """
    total = len(steps)
    scheduler = schedule(p.train.schedule, optimizer, math.ceil(p.train.warmup_ratio * total), total)
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    done, progress = checkpoint.load(*ckpt, recipe, model, optimizer, scheduler) or (
        0,
        {"curve": [], "tokens": 0},
    )
    start, seconds_before = time.perf_counter(), progress.setdefault("train_s", 0.0)
    # a checkpoint is due by time, not steps: its cost (a write of every trainable weight and its optimizer
    # state: 4 GB of fp32 weights alone for GaLore on 1B) is then a bounded share of the stage on any device
    saved_at = start
    model.train()
    with StopRequest() as stop, bar(label, total, unit=" steps", initial=done) as steps_bar:
        for step, micro in enumerate(steps, 1):
            if step <= done:
                continue  # the batches are a pure function of the seed: skipping them is the data position
            metrics = train_step(recipe, model, optimizer, scheduler, trainable, micro, p, passes)
            if not math.isfinite(metrics["loss"]):
                raise UserError(
                    f"{label}: loss is {metrics['loss']} at step {step}; likely a learning rate too high "
                    "(methods.*.lr) or fp16 on Gemma (use bf16 or fp32); no outputs were written"
                )
            if step == 1:
                recipe.check_first_step(optimizer)
            progress["tokens"] += metrics.pop("tokens")
            progress["train_s"] = seconds_before + time.perf_counter() - start
            log(step, metrics)
            if step % p.train.log_every == 0 or step == total:
                progress["curve"].append(
                    {"step": step, "loss": round(metrics["loss"], 5), "lr": metrics["lr"]}
                )
            run_rate = progress["tokens"] / progress["train_s"]  # the whole run's, resumed steps included
            steps_bar.set_postfix_str(f"loss {metrics['loss']:.4f}, {run_rate:,.0f} tokens/s", refresh=False)
            steps_bar.update()
            # %-style: the line is formatted only when debug is on, not at every step
            LOG.debug("%s: step %d/%d loss %.4f", label, step, total, metrics["loss"])
            every = p.train.checkpoint_every_s
            due = every and time.perf_counter() - saved_at >= every and step < total
            stopping = distributed.sum_scalars(float(bool(stop.signal)))[0] > 0  # any rank stops them all
            if (stopping or due) and distributed.is_main():  # the main rank's clock decides: it alone saves
                checkpoint.save(ckpt[0], ckpt[1], step, recipe, model, optimizer, scheduler, progress)
                saved_at = time.perf_counter()
            if stopping:
                who = f"signal {stop.signal}" if stop.signal else "a signal to another rank"
                raise UserError(
                    f"{label}: stopped by {who} after step {step}/{total}; "
                    f"checkpoint saved in {ckpt[0]}, rerun to resume"
                )
    return {**progress, "resumed_train_s": seconds_before}


def train_step(
    recipe: recipes.Recipe,
    model,
    optimizer,
    scheduler,
    trainable,
    micro,
    p: config.Params,
    passes: Passes | None = None,
) -> dict:
    """One optimizer step over `micro` (this rank's packed forward passes, run through `passes`); loss =
    mean over the step's answer tokens on every rank, so summing gradients over ranks gives the
    one-process gradient. Nothing in the passes waits for the GPU: the loss is read once, after the
    last backward."""
    passes = passes or Passes()
    t0 = time.perf_counter()
    tokens = sum(len(r["input_ids"]) for rows in micro for r in rows)
    (n_targets,) = distributed.sum_scalars(sum(answer_tokens(rows) for rows in micro))
    # DDP averages gradients over ranks; the step's gradient is their sum (the loss is over all ranks'
    # answer tokens), hence the factor. A rank with no rows this step (fewer rows than ranks) still
    # takes its part in the all-reduce, with a pass whose loss counts zero.
    scale = distributed.world_size() / n_targets
    weighted = [(rows, scale) for rows in micro] or [([PLACEHOLDER_ROW], 0.0)]
    step_loss = torch.zeros((), device=device())
    for i, (rows, weight) in enumerate(weighted, 1):
        last = i == len(weighted)
        with distributed.sync_gradients(passes.ddp, last):
            with autocast():
                loss = answer_loss(model, rows, p.train.fused_cross_entropy, passes) * weight
            recipe.before_backward(optimizer, last=last)
            loss.backward()
        step_loss += loss.detach()
    step_loss, tokens = distributed.sum_scalars(step_loss.item() / distributed.world_size(), tokens)
    # clipping at inf still returns the norm, which is logged
    grad_norm = recipe.clip(optimizer, trainable, p.train.max_grad_norm or math.inf)
    if math.isfinite(step_loss):
        optimizer.step()
        scheduler.step()
    # recorded backward passes add into the .grad tensors they captured: those stay, zeroed
    optimizer.zero_grad(set_to_none=passes.graphs is None)
    return {
        "loss": step_loss,
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
        "tokens_per_s": tokens / (time.perf_counter() - t0),
        "tokens": int(tokens),
    }
