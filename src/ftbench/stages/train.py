"""Train stage: one method, by its recipe (ftbench.recipes), on every dataset and seed, from models/base or
a merge: setup, fit (ftbench.training.loop), validation, save."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ftbench import recipes
from ftbench.common import commands, config, distributed, paths, resources, tracking
from ftbench.common.atomic import atomic_path, write_json
from ftbench.common.progress import LOG
from ftbench.loading import configure_attention, load_tokenizer
from ftbench.loss import answer_tokens, causal_lm, liger_available, mean_loss
from ftbench.training import checkpoint, graphs
from ftbench.training.loop import Passes, compile_layers, fit, optimizer_steps, use_liger_kernels


def init_dir(init: str, run: config.Run) -> Path:
    return paths.BASE if init == "base" else paths.run_dir(init, run)


def fingerprint(name: str, run: config.Run, p: config.Params) -> checkpoint.Fingerprint:
    """What determines `run` of method `name` (and the code, which checkpoint adds), in the words the
    line about an ignored checkpoint names it by."""
    init, split = init_dir(p.methods[name].init, run), paths.split_file(run.dataset, "train")
    return checkpoint.Fingerprint(
        settings={
            f"the method's params (methods.{name})": p.methods[name].model_dump(),
            "the train params (train)": p.train.model_dump(),
            "the training seed (seeds)": run.seed,
            "the split seed (seed)": p.seed,
            # every step's rows are shared out over the ranks: another count trains on other batches
            "the number of data-parallel processes (resources.gpus)": distributed.world_size(),
        },
        files={f"the model it starts from ({init})": init, f"the prepared training data ({split})": split},
    )


def train_one(
    name: str, run: config.Run, p: config.Params, out: Path, st: tracking.StageRun, tokenizer
) -> dict:
    """Set up the recipe, fit on one dataset with one seed, save the adapter or model to `out`."""
    method = p.methods[name]
    torch.manual_seed(run.seed)
    init = init_dir(method.init, run)
    recipe = recipes.get(method.recipe)
    with st.record.phase("load"):
        model, optimizer, facts = recipe.setup(init, method, p, run.seed)
        liger = use_liger_kernels(model, p)
        compile_layers(model, p)
        rows = paths.split_rows(run.dataset, "train")
        steps = optimizer_steps(rows, method, p, run.seed)
        passes = Passes.setup(model, method, p, steps)
    where = checkpoint.folder(name, run.key)
    ckpt = (where, fingerprint(name, run, p))  # it reads no file until a checkpoint is checked or saved
    with st.record.phase("train"):
        result = fit(recipe, model, optimizer, steps, f"train@{name}", p, st.log_step, ckpt, passes)
    graphed, graph_lengths = passes.graphs is not None, graphs.lengths(passes.graphs)  # for the record
    passes.release(model)  # before validation, which runs eagerly
    validation = paths.split_rows(run.dataset, "validation")
    # a recipe that saves another form (a merge) checks it on the validation rows (on every rank: the
    # loss is summed over them) against the validation loss, computed once; where there are none, on
    # one step's training rows, which only such a recipe scores
    check = validation or rows[: method.batch_size * method.grad_accum]

    def check_loss(m) -> float:
        return mean_loss(m, check, p.train.fused_cross_entropy)

    with st.record.phase("validate"):
        val_loss = check_loss(model) if validation else None
    with st.record.phase("save"):
        saved, saved_facts = recipe.to_save(model, val_loss, check_loss)
        if distributed.is_main():
            recipe.save(saved, out, tokenizer)
    if distributed.is_main():
        checkpoint.remove(where)
    # `steps` holds this rank's rows: the FLOPs count every rank's, like `tokens`
    (targets,) = distributed.sum_scalars(sum(answer_tokens(r) for s in steps for r in s))
    targets = int(targets)
    curve = result["curve"]
    return {
        "recipe": method.recipe,
        "init": str(init),
        "optimizer_steps": len(steps),
        "tokens": result["tokens"],
        "answer_tokens": targets,
        "train_s": round(result["train_s"], 2),
        "resumed_train_s": round(result["resumed_train_s"], 2),
        "flops": resources.training_flops(
            causal_lm(model).config, recipe.weight_gradients, result["tokens"], targets
        ),
        "fused_cross_entropy": p.train.fused_cross_entropy and liger_available(),
        "liger_kernels": liger,
        "cuda_graphs": graphed,
        "graph_lengths": graph_lengths,
        **recipe.facts_after(optimizer),
        "first_loss": curve[0]["loss"],
        "final_loss": curve[-1]["loss"],
        "val_loss": val_loss,
        **facts,
        **saved_facts,
        "curve": curve,
    }


def run(name: str, p: config.Params, st: tracking.StageRun) -> dict:
    results = {}
    tokenizer = load_tokenizer(paths.BASE)  # one load of the 262k-token vocabulary for every run
    with _output_dir(paths.model_dir(name)) as out:
        for r in p.runs(name):
            LOG.info(f"train {name} on {r.key}")
            results[r.key] = train_one(name, r, p, out / r.key, st, tokenizer)
    if not distributed.is_main():
        return results
    for key, r in results.items():
        _write_curve(paths.CURVES / name / f"{key.replace('/', '-')}.csv", r.pop("curve"))
    write_json(paths.TRAIN / f"{name}.json", results)
    tokens, train_s = sum(r["tokens"] for r in results.values()), sum(r["train_s"] for r in results.values())
    st.record.update(
        tokens=tokens,
        train_s=round(train_s, 2),
        # training seconds that stopped attempts of this stage spent before the checkpoints it resumed from:
        # the report adds them to the stage's wall time, which is this attempt's (their start-up is lost)
        resumed_train_s=round(sum(r["resumed_train_s"] for r in results.values()), 2),
        tokens_per_s=round(tokens / train_s, 1),
        mfu=resources.mfu(
            sum(r["flops"] for r in results.values()) / train_s,
            resources.peak_tflops(p.resources.peak_tflops),
            devices=distributed.world_size(),
        ),
    )
    st.artifacts += [paths.TRAIN / f"{name}.json", paths.CURVES / name]
    return results


@contextlib.contextmanager
def _output_dir(path: Path):
    """The stage's output folder on rank 0 (written atomically); other ranks save nothing."""
    if distributed.is_main():
        with atomic_path(path, is_dir=True) as out:
            yield out
    else:
        yield Path("/nonexistent")  # never written: saving is rank 0's


def _write_curve(path: Path, curve: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("step,loss,lr\n" + "".join(f"{c['step']},{c['loss']},{c['lr']:.6g}\n" for c in curve))


def main(argv: list[str]) -> None:
    p, name = commands.parse("train", argv)
    distributed.launch_or_init(p, "train", argv)
    resources.cap_gpu_memory(p.resources.max_gpu_memory_gib)
    configure_attention()
    with tracking.stage(f"train-{name}", p, method=name, recipe=p.methods[name].recipe) as st:
        run(name, p, st)
