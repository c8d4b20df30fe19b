"""Train stage: one method (qlora or galore recipe) on every dataset, from models/base or a merge.

usage: python -m ftbench.train <method>
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import get_scheduler

from ftbench import chat, config, galore, paths, qlora
from ftbench.atomic import atomic_path, read_jsonl, write_json
from ftbench.errors import UserError, one_argument, stage_main
from ftbench.loading import device, load_tokenizer
from ftbench.resources import measure

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
LENGTH_POOL = 64  # micro-batches per pool that is sorted by length: little padding, order still random


def init_dir(init: str, dataset: str) -> Path:
    return paths.BASE if init == "base" else paths.model_dir(init) / dataset


# ---------------------------------------------------------------- batching


def micro_batches(rows: list[dict], batch_size: int, seed: int, epoch: int) -> list[list[dict]]:
    """Length-grouped micro-batches: shuffle, sort within pools of similar size, shuffle the batches."""
    rng = random.Random(seed * 1000 + epoch)
    order = rows[:]
    rng.shuffle(order)
    pool = batch_size * LENGTH_POOL
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda r: len(r["input_ids"]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def optimizer_steps(
    rows: list[dict], method: config.MethodParams, p: config.Params
) -> list[list[list[dict]]]:
    """All epochs' micro-batches grouped grad_accum at a time, capped at train.max_steps."""
    micro = [b for e in range(method.epochs) for b in micro_batches(rows, method.batch_size, p.seed, e)]
    steps = [micro[i : i + method.grad_accum] for i in range(0, len(micro), method.grad_accum)]
    return steps[: p.train.max_steps] if p.train.max_steps else steps


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; labels cover the answer tokens only."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), chat.IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n, k = len(r["input_ids"]), r["prompt_len"]
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, k:n] = ids[i, k:n]
        mask[i, :n] = 1
    dev = device()
    return {"input_ids": ids.to(dev), "labels": labels.to(dev), "attention_mask": mask.to(dev)}


# ---------------------------------------------------------------- loss


def causal_lm(model):
    """The plain *ForCausalLM under a peft wrapper, if any."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens.

    The 262k-token output layer is applied to answer positions only: prompt and padding positions never
    become logits, which is most of the largest tensor in training.
    """
    lm = causal_lm(model)
    hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != chat.IGNORE
    logits = lm.lm_head(hidden[:, :-1][keep]).float()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets[keep], reduction="sum")


def autocast():
    """bf16 autocast on the GPU; the CPU path stays in fp32."""
    if torch.cuda.is_available():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def answer_tokens(rows: list[dict]) -> int:
    """Tokens the loss is taken over: the answer and its end-of-turn token."""
    return sum(len(r["input_ids"]) - r["prompt_len"] for r in rows)


@torch.no_grad()
def mean_loss(model, rows: list[dict], batch_size: int, pad_id: int) -> float | None:
    """Teacher-forced loss per answer token on `rows` (validation)."""
    if not rows:
        return None
    model.eval()
    total = 0.0
    for i in range(0, len(rows), batch_size):
        with autocast():
            total += answer_loss(model, collate(rows[i : i + batch_size], pad_id)).item()
    model.train()
    return total / answer_tokens(rows)


# ---------------------------------------------------------------- fitting


def fit(model, optimizer, steps, method: config.MethodParams, p: config.Params, pad_id: int) -> dict:
    """The training loop; returns the loss curve and token counts."""
    total = len(steps)
    scheduler = get_scheduler(
        SCHEDULES[p.train.schedule],
        optimizer,
        num_warmup_steps=math.ceil(p.train.warmup_ratio * total),
        num_training_steps=total,
    )
    trainable = [t for g in optimizer.param_groups for t in g["params"]]
    curve, tokens = [], 0
    model.train()
    for step, micro in enumerate(steps, 1):
        n_targets = sum(answer_tokens(rows) for rows in micro)  # the step's loss is a mean over all of them
        step_loss = 0.0
        for rows in micro:
            batch = collate(rows, pad_id)
            tokens += int(batch["attention_mask"].sum())
            with autocast():
                loss = answer_loss(model, batch) / n_targets
            loss.backward()
            step_loss += loss.item()
        if not math.isfinite(step_loss):
            raise UserError(
                f"loss is {step_loss} at step {step}; lower methods.*.lr, or check for fp16 on Gemma"
            )
        if p.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, p.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 1 and method.recipe == "galore":
            galore.check_projected(optimizer)
        if step % p.train.log_every == 0 or step == total:
            curve.append({"step": step, "loss": round(step_loss, 5), "lr": scheduler.get_last_lr()[0]})
            print(f"  step {step}/{total} loss {step_loss:.4f}", flush=True)
    return {"curve": curve, "tokens": tokens}


def train_one(name: str, dataset: str, p: config.Params, out: Path) -> dict:
    """Set up the recipe, fit on one dataset, save the adapter or model to `out`."""
    method = p.methods[name]
    torch.manual_seed(p.seed)
    init = init_dir(method.init, dataset)
    tokenizer = load_tokenizer(paths.BASE)
    setup = qlora.setup if method.recipe == "qlora" else galore.setup
    model, optimizer, facts = setup(init, method, p)
    rows = read_jsonl(paths.split_file(dataset, "train"))
    steps = optimizer_steps(rows, method, p)
    t0 = time.perf_counter()
    result = fit(model, optimizer, steps, method, p, tokenizer.pad_token_id)
    train_s = time.perf_counter() - t0
    val = read_jsonl(paths.split_file(dataset, "validation"))
    model.save_pretrained(out, safe_serialization=True)
    if method.recipe == "galore":
        tokenizer.save_pretrained(out)
    curve = result["curve"]
    return {
        "recipe": method.recipe,
        "init": str(init),
        "optimizer_steps": len(steps),
        "tokens": result["tokens"],
        "answer_tokens": sum(answer_tokens(r) for s in steps for r in s),
        "train_s": round(train_s, 2),
        "first_loss": curve[0]["loss"],
        "final_loss": curve[-1]["loss"],
        "val_loss": mean_loss(model, val, method.batch_size, tokenizer.pad_token_id),
        **facts,
        "curve": curve,
    }


def run(name: str, p: config.Params) -> dict:
    results = {}
    with atomic_path(paths.model_dir(name), is_dir=True) as out:
        for dataset in p.data.datasets:
            print(f"train {name} on {dataset}", flush=True)
            results[dataset] = train_one(name, dataset, p, out / dataset)
    for dataset, r in results.items():
        _write_curve(paths.CURVES / name / f"{dataset}.csv", r.pop("curve"))
    write_json(paths.TRAIN / f"{name}.json", results)
    return results


def _write_curve(path: Path, curve: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("step,loss,lr\n" + "".join(f"{c['step']},{c['loss']},{c['lr']:.6g}\n" for c in curve))


@stage_main
def main(argv: list[str]) -> None:
    p = config.load()
    name = one_argument(argv, list(p.methods), "train")
    with measure(f"train-{name}") as extra:
        results = run(name, p)
        extra["tokens"] = sum(r["tokens"] for r in results.values())
        extra["train_s"] = sum(r["train_s"] for r in results.values())


if __name__ == "__main__":
    main()
