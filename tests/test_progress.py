"""What a stage shows: plain progress lines without a terminal, bars on rank 0 only, FTBENCH_LOG's level,
and bitsandbytes' kernels message gone while other warnings stay."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from ftbench import cli
from ftbench.common import progress
from ftbench.stages import train

KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def test_without_a_terminal_a_plain_line_every_interval_with_step_total_and_eta(monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.3)
    updates = 20
    with progress.bar("phase", updates, unit=" steps") as steps:
        for _ in range(updates):
            time.sleep(0.05)
            steps.set_postfix_str("loss 1.2345", refresh=False)
            steps.update()
    err = capsys.readouterr().err
    assert "\r" not in err  # lines, not redraws
    lines = err.splitlines()
    assert lines[0].startswith("phase: 0/20 (0%)") and lines[-1].startswith("phase: 20/20 (100%)")
    assert 3 <= len(lines) < updates / 2  # about one a 0.3 s over 1 s of updates, not one per update
    middle = [
        re.fullmatch(r"phase: (\d+)/20 \(\d+%\), 00:0\d elapsed, ETA 00:0\d, loss 1.2345", x)
        for x in lines[1:-1]
    ]
    assert middle and all(middle), lines


def test_the_training_bar_shows_the_loss_and_tokens_per_s(prepared, st, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a line at every step
    train.run("qlora", prepared, st)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("train@qlora: ")]
    total = int(re.match(r"train@qlora: 0/(\d+) ", lines[0])[1])
    assert len(lines) == total + 1
    assert re.fullmatch(
        rf"train@qlora: {total}/{total} \(100%\), \S+ elapsed, ETA 00:00, loss \d+\.\d{{4}}, [\d,]+ tokens/s",
        lines[-1],
    )


def _rank_shows_a_bar(rank: int, store: str, out: str) -> None:
    """Spawned: one of two gloo ranks draws a bar into its own (non-terminal) stderr, saved to `out`."""
    import io

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    progress.PLAIN_EVERY_S = 0.0
    sys.stderr = io.StringIO()
    with progress.bar("phase", 3) as b:
        b.update(3)
    text = sys.stderr.getvalue()
    dist.destroy_process_group()
    with open(f"{out}{rank}", "w") as f:
        f.write(text)


@pytest.mark.xdist_group("gloo")  # as tests/test_distributed.py: one gloo group at a time
def test_bars_are_shown_on_rank_0_only(tmp_path):
    mp.spawn(_rank_shows_a_bar, args=(str(tmp_path / "store"), str(tmp_path / "rank")), nprocs=2)
    assert "phase: 3/3 (100%)" in (tmp_path / "rank0").read_text()
    assert (tmp_path / "rank1").read_text() == ""


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_bitsandbytes_kernels_message_is_filtered_and_other_warnings_pass():
    if KERNELS_MESSAGE not in _python("import bitsandbytes").stderr:
        pytest.skip("bitsandbytes logs its kernels message only on a CPU with AVX512-bf16")
    code = (
        "from ftbench import cli\n"
        "cli.prepare_process()\n"
        "import bitsandbytes, logging\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('a warning that matters')\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert KERNELS_MESSAGE not in done.stderr
    assert "a warning that matters" in done.stderr


def _stage(argv: list[str]) -> None:
    progress.LOG.debug("a debug line")
    progress.LOG.info("an info line")
    progress.LOG.warning("a warning line")


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["a debug line", "an info line", "ftbench: warning: a warning line"]),
        ("info", ["an info line", "ftbench: warning: a warning line"]),
        ("WARNING", ["ftbench: warning: a warning line"]),
    ],
)
def test_ftbench_log_sets_the_level(level, shown, monkeypatch, capsys):
    monkeypatch.setenv("FTBENCH_LOG", level)
    cli.run(_stage, [])
    assert capsys.readouterr().err.splitlines() == shown


def test_an_unknown_ftbench_log_level_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setenv("FTBENCH_LOG", "loud")
    with pytest.raises(SystemExit) as code:
        cli.run(_stage, [])
    assert code.value.code == 2
    assert capsys.readouterr().err.startswith("ftbench: error: log level 'loud' is not one of debug, info")


def test_a_level_set_by_a_flag_holds_for_the_stage_and_its_ranks(monkeypatch, capsys):
    monkeypatch.setenv("FTBENCH_LOG", "info")  # restored after the test; set_level overrides it
    progress.set_level("warning")  # what `-q` does
    cli.run(_stage, [])
    assert capsys.readouterr().err.splitlines() == ["ftbench: warning: a warning line"]
    rank = _python("import ftbench.common.progress as p; p.configure(); print(p.LOG.getEffectiveLevel())")
    assert rank.stdout.split() == ["30"]  # a process started from this one, as torchrun starts a rank


def test_lines_are_printed_once_when_a_library_configures_the_root_logger(capsys):
    """rouge-score's scoring configures the root logger; ftbench's lines must not then appear twice."""
    import logging

    root = logging.getLogger()
    added = logging.StreamHandler(sys.stderr)
    root.addHandler(added)
    try:
        progress.LOG.info("evaluate base: BLEU-4 1.00")
    finally:
        root.removeHandler(added)
    assert capsys.readouterr().err.count("evaluate base: BLEU-4 1.00") == 1
