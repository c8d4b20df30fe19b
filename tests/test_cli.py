"""`ftbench` and every command explain themselves: --help exits 0 and names the arguments and the
params.yaml keys; a wrong command line is one `ftbench: error:` line and exit 2; -v/-q set FTBENCH_LOG."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from ftbench import cli
from ftbench.common import commands
from ftbench.common.errors import UserError

from .conftest import ROOT

SRC = str(ROOT / "src")


def ftbench(args: list[str], capsys) -> tuple[int, str, str]:
    """`ftbench <args>` in this process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def python_m(module: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command_with_its_line(capsys):
    code, out, _ = ftbench(["--help"], capsys)
    assert code == 0
    for name, command in commands.COMMANDS.items():
        assert f"  {name}" in out and command.summary in out


def test_python_m_ftbench_is_the_same_command():
    run = python_m("ftbench", "--help")
    assert run.returncode == 0 and "ftbench <command> --help" in run.stdout


def test_no_command_shows_the_list_and_exits_2(capsys):
    code, out, err = ftbench([], capsys)
    assert code == 2 and not out
    assert all(f"  {name}" in err for name in commands.COMMANDS)


@pytest.mark.parametrize("args", [["nope"], ["-x", "train"], ["-v", "-q", "train"]])
def test_a_wrong_command_line_is_one_error_line_and_exit_2(args, capsys):
    code, out, err = ftbench(args, capsys)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("ftbench: error: ") and "ftbench --help" in err
    assert args[0] in err or args[1] in err


def test_train_help_names_its_argument_the_methods_and_every_key_it_reads(capsys):
    code, out, _ = ftbench(["train", "--help"], capsys)
    assert code == 0
    assert "usage: ftbench train [-h] [-v | -q] method" in out
    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]
    assert f"a method of params.yaml: {', '.join(methods)}" in " ".join(out.split())
    keys = ("methods.<method>.lr", "methods.<method>.galore.rank", "methods.<method>.micro_batch_tokens")
    for key in (*keys, "seeds"):
        assert f"\n  {key} " in out


@pytest.mark.parametrize("command", commands.COMMANDS)
def test_every_command_help_lists_the_keys_it_reads(command, capsys):
    code, out, _ = ftbench([command, "--help"], capsys)
    assert code == 0 and f"usage: ftbench {command} [-h] [-v | -q]" in out
    for section in commands.params_read(command):
        for key, _ in commands.keys_under(section):
            assert f"\n  {key} " in out, f"{command} --help does not name {key}"


def test_help_without_params_yaml_names_the_argument_in_general(tmp_path):
    run = python_m("ftbench", "evaluate", "--help", cwd=tmp_path)
    assert run.returncode == 0
    said = " ".join(run.stdout.split())  # argparse wraps the argument's help
    assert "base (the untrained model) or a method of params.yaml (params.yaml did not load:" in said
    assert "methods.<method>.recipe" in run.stdout


def test_an_unknown_method_is_one_error_line_naming_the_choices(project, capsys):
    code, out, err = ftbench(["train", "nope"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("ftbench: error: argument method: invalid choice: 'nope'") and "'galore'" in err


@pytest.mark.parametrize(("flag", "level"), [("-v", "debug"), ("--quiet", "warning")])
@pytest.mark.parametrize("command", commands.COMMANDS)
def test_verbosity_flags_set_ftbench_log_for_every_command(
    command, flag, level, tmp_path, monkeypatch, capsys
):
    """In a folder without params.yaml each command stops with an error, after its flags took effect."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(commands.LOG_ENV, "info")
    argument = ["qlora"] if commands.COMMANDS[command].argument else []
    code, _, err = ftbench([command, flag, *argument], capsys)
    assert code == 2 and err.startswith("ftbench: error: ")
    assert os.environ[commands.LOG_ENV] == level


def test_a_flag_before_the_command_sets_the_level_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(commands.LOG_ENV, "info")
    ftbench(["-q", "report"], capsys)
    assert os.environ[commands.LOG_ENV] == "warning"


def test_out_of_memory_is_one_message_naming_the_knobs(capsys):
    def stage(argv):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SystemExit) as code:
        cli.run(stage, [])
    err = capsys.readouterr().err
    assert code.value.code == 3 and err.count("\n") == 1
    assert all(
        k in err
        for k in ("methods.*.micro_batch_tokens", "methods.*.batch_size", "train.gradient_checkpointing")
    )


def test_a_token_in_an_error_message_is_never_printed(capsys):
    def stage(argv):
        raise UserError("model x: 401 for https://hub/?token=hf_abcdefghijklmnop")

    with pytest.raises(SystemExit):
        cli.run(stage, [])
    err = capsys.readouterr().err
    assert "hf_abcdefghijklmnop" not in err and "token=***" in err


def test_the_process_is_prepared_before_the_command_module_is_imported(monkeypatch):
    """The allocator setting and bitsandbytes' filter come before the command's own imports."""
    import importlib
    import os

    order = []
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setattr(cli, "prepare_process", lambda: order.append("prepared"))
    real = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda name, *rest: order.append(name) or real(name, *rest)
    )
    with pytest.raises(SystemExit) as done:
        cli.main(["model", "--help"])
    assert done.value.code == 0 and order[0] == "prepared" and "ftbench.stages.model" in order
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ  # prepare_process, replaced here, is what sets it


def test_preparing_the_process_sets_the_allocator_but_keeps_a_users_own(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    cli.prepare_process()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "backend:native")
    cli.prepare_process()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "backend:native"


@pytest.mark.parametrize("command", [["train", "qlora"], ["evaluate", "base"], ["merge", "qlora"]])
def test_a_stage_before_its_inputs_is_one_line_naming_the_stage_to_run(command, project, capsys):
    code, out, err = ftbench(command, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("ftbench: error: models/base is missing; run the stage that writes it first")
    assert err.endswith("`dvc repro model`\n") and not out
