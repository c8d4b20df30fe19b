import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ftbench import recipes
from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl, write_jsonl
from ftbench.common.errors import UserError
from ftbench.recipes.full import RECIPE as PLAIN  # a torch optimizer's own state (Recipe's default)
from ftbench.stages import train
from ftbench.training import checkpoint, loop

from .conftest import write_params

LONG = {
    "data.sizes": {"train": 16, "validation": 4, "test": 8},
    "train.checkpoint_every_s": 1e-9,
}  # every step
FP = checkpoint.Fingerprint({"the run": 1}, {})


def long_run(project, tiny_model_dir, method):
    """A run of 48 one-example steps, so a kill lands in the middle of it."""
    write_params(
        project,
        tiny_model_dir,
        **LONG,
        **{
            f"methods.{method}.batch_size": 1,
            f"methods.{method}.grad_accum": 1,
            f"methods.{method}.epochs": 3,
        },
    )


def start(project, method):
    env = {**os.environ, "FTBENCH_MLFLOW": "off"}
    return subprocess.Popen(
        [sys.executable, "-m", "ftbench", "train", method],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(proc, method, min_step=3):
    state = checkpoint.folder(method, "builtin/seed0") / checkpoint.FILE
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        if state.exists():
            try:
                if torch.load(state, weights_only=True)["step"] >= min_step:
                    return state
            except (RuntimeError, EOFError):  # caught between write and rename of another file
                pass
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qlora", "galore", "multi-adapter"])
def test_killed_run_resumes_to_the_same_losses(prepared, project, tiny_model_dir, method):
    long_run(project, tiny_model_dir, method)
    curve = paths.CURVES / method / "builtin-seed0.csv"
    done = start(project, method)
    assert done.wait() == 0, done.stderr.read()[-2000:]
    uninterrupted = curve.read_text()
    assert not checkpoint.folder(method, "builtin/seed0").exists()  # a finished run cleans up
    assert resumed_seconds(method) == (0, 0)

    proc = start(project, method)
    wait_for_checkpoint(proc, method)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = start(project, method)
    out, err = again.communicate()
    assert again.returncode == 0, err[-2000:]
    assert "resuming from step" in err
    # on the CPU the resumed run repeats the uninterrupted one exactly (tolerance 0)
    assert curve.read_text() == uninterrupted
    # the killed attempt's training seconds are counted, in the run's facts and in the stage's record
    in_run, in_record = resumed_seconds(method)
    assert in_run > 0 and in_record == in_run


@pytest.mark.parametrize("every_s, saved_at_step", [(3600.0, None), (1e-9, 11)])
def test_a_checkpoint_is_due_by_training_time_not_steps(prepared, every_s, saved_at_step):
    p = prepared.model_copy(
        update={"train": prepared.train.model_copy(update={"checkpoint_every_s": every_s})}
    )
    method = p.methods["qlora"].model_copy(update={"batch_size": 1, "grad_accum": 1})
    recipe = recipes.get(method.recipe)
    model, optimizer, _ = recipe.setup(paths.BASE, method, p, 0)
    steps = loop.optimizer_steps(read_jsonl(paths.split_file("builtin", "train")), method, p, 0)[:12]
    where = checkpoint.folder("qlora", "builtin/seed0")
    fp = train.fingerprint("qlora", config.Run("builtin", 0), p)
    loop.fit(recipe, model, optimizer, steps, "train@qlora", p, lambda *_: None, (where, fp))
    # 12 steps: a step count (the former `checkpoint_every: 10`) would have saved at step 10 either way;
    # an hour of training saves none, a tiny interval one after every step but the last
    state = where / checkpoint.FILE
    step = torch.load(state, weights_only=True)["step"] if state.exists() else None
    assert step == saved_at_step
    assert ("parts" in vars(fp)) == state.exists()  # a run that saves no checkpoint hashes no file


def fit_two_steps(p: config.Params, run: config.Run, stop_after: int | None = None) -> list[int]:
    """qlora's first two optimizer steps on `run`'s data, checkpointed in builtin/seed0's folder whatever
    the run's seed, so that only the fingerprint tells a training seed's checkpoint from another's.
    `stop_after` a step, it stops as on Ctrl-C (a checkpoint, then a UserError). Returns the steps trained."""
    method = p.methods["qlora"]
    recipe = recipes.get(method.recipe)
    model, optimizer, _ = recipe.setup(paths.BASE, method, p, run.seed)
    steps = loop.optimizer_steps(read_jsonl(paths.split_file(run.dataset, "train")), method, p, run.seed)
    trained = []

    def log(step: int, _metrics: dict) -> None:
        trained.append(step)
        if step == stop_after:
            signal.raise_signal(signal.SIGINT)

    ckpt = (checkpoint.folder("qlora", "builtin/seed0"), train.fingerprint("qlora", run, p))
    loop.fit(recipe, model, optimizer, steps[:2], "train@qlora", p, log, ckpt)
    return trained


def other_training_seed(p: config.Params) -> tuple[config.Params, config.Run]:
    return p, config.Run("builtin", 1)


def other_split_seed(p: config.Params) -> tuple[config.Params, config.Run]:
    return p.model_copy(update={"seed": p.seed + 1}), config.Run("builtin", 0)


def other_base_weights(p: config.Params) -> tuple[config.Params, config.Run]:
    from safetensors.torch import load_file, save_file

    weights = paths.BASE / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"] += 0.5
    save_file(tensors, weights, metadata={"format": "pt"})
    return p, config.Run("builtin", 0)


def other_training_rows(p: config.Params) -> tuple[config.Params, config.Run]:
    split = paths.split_file("builtin", "train")
    rows = read_jsonl(split)
    write_jsonl(split, [rows[1], *rows[1:]])  # as many rows as before: only their content tells
    return p, config.Run("builtin", 0)


@pytest.mark.parametrize(
    "change, named",
    [
        (None, None),
        (other_training_seed, "the training seed (seeds)"),
        (other_split_seed, "the split seed (seed)"),
        (other_base_weights, "the model it starts from (models/base)"),
        (other_training_rows, "the prepared training data (data/prepared/builtin/train.jsonl)"),
    ],
)
def test_a_checkpoint_resumes_only_the_run_that_wrote_it(
    prepared, project, tiny_model_dir, capsys, change, named
):
    one_example_steps = {"methods.qlora.batch_size": 1, "methods.qlora.grad_accum": 1}
    write_params(project, tiny_model_dir, **one_example_steps, **{"train.checkpoint_every_s": 0})
    p, run = config.load(), config.Run("builtin", 0)
    with pytest.raises(UserError, match="stopped by signal 2 after step 1/2"):
        fit_two_steps(p, run, stop_after=1)
    if change:
        p, run = change(p)
    capsys.readouterr()
    trained = fit_two_steps(p, run)
    err = capsys.readouterr().err
    if change is None:
        assert trained == [2] and "resuming from step 1" in err
    else:
        state = checkpoint.folder("qlora", "builtin/seed0") / checkpoint.FILE
        assert trained == [1, 2]
        assert [line for line in err.splitlines() if "ignoring" in line] == [
            f"ftbench: warning: ignoring {state}: {named} changed since it was written; "
            "training from the start"
        ]


def test_a_checkpoint_of_older_code_is_ignored_with_one_line(tmp_path, capsys):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    checkpoint.save(tmp_path, FP, 3, PLAIN, model, opt, sched, {"curve": [], "tokens": 0})
    state = torch.load(tmp_path / checkpoint.FILE, weights_only=True)
    torch.save({**state, "fingerprint": "0123456789abcdef"}, tmp_path / checkpoint.FILE)  # its one digest
    assert checkpoint.load(tmp_path, FP, PLAIN, model, opt, sched) is None
    assert capsys.readouterr().err == (
        f"ftbench: warning: ignoring {tmp_path / checkpoint.FILE}: it was written by an older ftbench, "
        "which recorded nothing to compare with this run; training from the start\n"
    )


def resumed_seconds(method: str) -> tuple[float, float]:
    run = json.loads((paths.TRAIN / f"{method}.json").read_text())["builtin/seed0"]
    record = json.loads((paths.RESOURCES / f"train-{method}.json").read_text())
    return run["resumed_train_s"], record["resumed_train_s"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_a_message(prepared, project, tiny_model_dir):
    long_run(project, tiny_model_dir, "qlora")
    write_params(project, tiny_model_dir, **{**LONG, "train.checkpoint_every_s": 0})  # only the stop saves
    proc = start(project, "qlora")
    while not proc.stderr.readline().startswith("train@qlora: "):  # the progress bar: training has begun
        assert proc.poll() is None, "training ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 2 and "stopped by signal 15" in err and "rerun to resume" in err
    assert "Traceback" not in err and not paths.model_dir("qlora").exists()
    stopped_at = int(re.search(r"after step (\d+)/", err)[1])
    state = checkpoint.folder("qlora", "builtin/seed0") / checkpoint.FILE
    assert torch.load(state, weights_only=True)["step"] == stopped_at


def test_a_checkpoint_of_other_weights_is_refused_before_anything_loads(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # a checkpoint holds only the trainable weights
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    checkpoint.save(tmp_path, FP, 3, PLAIN, model, opt, sched, {"curve": [], "tokens": 0})
    assert checkpoint.load(tmp_path, FP, PLAIN, model, opt, sched)[0] == 3

    renamed = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Identity(), torch.nn.Linear(4, 2))
    renamed[0].requires_grad_(False)
    before = renamed[2].weight.clone()
    with pytest.raises(UserError) as err:
        checkpoint.load(tmp_path, FP, PLAIN, renamed, opt, sched)
    message = str(err.value)
    assert f"checkpoint {tmp_path / checkpoint.FILE}" in message and f"delete {tmp_path}" in message
    assert "not saved: 2.bias, 2.weight" in message and "not in the model: 1.bias, 1.weight" in message
    assert "\n" not in message and torch.equal(renamed[2].weight, before)
    resized = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    with pytest.raises(UserError, match="other shape: 1.bias, 1.weight"):
        checkpoint.load(tmp_path, FP, PLAIN, resized, opt, sched)


GROUP = {"rank": 4, "update_proj_gap": 5, "scale": 0.25, "proj_type": "std", "refresh_streams": 1}


def test_galore_projectors_survive_a_weights_only_round_trip(prepared, tmp_path):
    from ftbench.optim import BatchedGaLoreAdamW, Projector
    from ftbench.recipes.galore import RECIPE

    w = torch.nn.Parameter(torch.randn(32, 16))
    opt = BatchedGaLoreAdamW(
        [{"params": [w], **GROUP}],
        lr=1e-3,
        no_deprecation_warning=True,
    )
    opt.state[w]["projector"] = Projector(4, 5, 0.25, "std", svd="lowrank")
    model = torch.nn.Linear(16, 32)
    model.weight = w
    w.grad = torch.randn_like(w)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    checkpoint.save(tmp_path, FP, 1, RECIPE, model, opt, sched, {"curve": [], "tokens": 0})
    assert hasattr(opt.state[w]["projector"], "project")  # saving left the live optimizer intact
    fresh = BatchedGaLoreAdamW(
        [{"params": [w], **GROUP}],
        lr=1e-3,
        no_deprecation_warning=True,
    )
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh, lambda _: 1.0)
    other_run = checkpoint.Fingerprint({"the run": 2}, {})
    assert checkpoint.load(tmp_path, other_run, RECIPE, model, fresh, fresh_sched) is None
    assert checkpoint.load(tmp_path, FP, RECIPE, model, fresh, fresh_sched)[0] == 1
    proj = fresh.state[w]["projector"]
    torch.testing.assert_close(proj.ortho_matrix, opt.state[w]["projector"].ortho_matrix)
    assert (proj.rank, proj.scale, proj.proj_type, proj.svd) == (4, 0.25, "std", "lowrank")


def test_a_non_finite_loss_stops_the_stage_with_no_outputs(prepared, monkeypatch, st):
    from ftbench import loss
    from ftbench.stages import train
    from ftbench.training import loop

    def nan_loss(model, batch, fused, passes=None):
        return loss.answer_loss(model, batch, fused, passes) * float("nan")

    monkeypatch.setattr(loop, "answer_loss", nan_loss)
    with pytest.raises(
        UserError, match=r"train@qlora: loss is nan at step 1; likely a learning rate too high"
    ):
        train.run("qlora", config.load(), st)
    assert not paths.model_dir("qlora").exists() and not (paths.TRAIN / "qlora.json").exists()


def test_the_code_a_fingerprint_covers_is_the_whole_package(tmp_path, monkeypatch):
    """Every module of ftbench, in any of its folders: an edit anywhere starts training afresh."""
    import shutil

    import ftbench

    assert Path(ftbench.__file__).parent == checkpoint.PACKAGE
    copy = shutil.copytree(
        checkpoint.PACKAGE, tmp_path / "ftbench", ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(checkpoint, "PACKAGE", copy)

    def code() -> str:
        return checkpoint.Fingerprint(settings={}, files={}).parts["the ftbench code"]

    before = code()
    with (copy / "stages" / "report.py").open("a") as f:
        f.write("# an edit far from training\n")
    assert code() != before
