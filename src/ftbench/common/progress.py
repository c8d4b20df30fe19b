"""What a stage shows while it works: its log lines (the `ftbench` logger), one progress bar per long
phase, and none of the third-party lines that tell the user nothing.

`FTBENCH_LOG` (debug, info, warning, error; default info) sets the level; `set_level` is the same switch
for a command-line flag. Bars are info-level output: `warning` hides them along with the info lines.
"""

from __future__ import annotations

import logging
import os
import sys

from tqdm import tqdm

from ftbench.common.errors import UserError

LOG = logging.getLogger("ftbench")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Without a terminal (CI, `dvc exp run --queue` logs, pytest) a bar cannot redraw in place, and tqdm's
# ten redraws a second would fill the log: a plain line every PLAIN_EVERY_S instead, often enough to see
# a phase move and its ETA, rarely enough that an hour-long phase adds about 120 lines to the log.
PLAIN_EVERY_S = 30.0
PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), {elapsed} elapsed, ETA {remaining}{postfix}"
# Third-party log messages that say nothing the user can act on, as (logger, message start).
NOISE = [
    # bitsandbytes, on every import on an AVX512-bf16 CPU: the optional `kernels` package (a faster CPU
    # 4-bit matmul from the hub) is not installed; its own kernel is used, the results are the same.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
]


class _Handler(logging.Handler):
    """Lines to the current stderr (as pytest's capture or a redirect sees it at the time), through tqdm
    so that a bar on the terminal is redrawn below the line instead of being torn by it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's contract: a failed line never stops the program
            self.handleError(record)


class _Formatter(logging.Formatter):
    """Info and debug lines as they are; warnings and errors as `ftbench: warning: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"ftbench: {record.levelname.lower()}: {text}"


class _DropNoise(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_third_party() -> None:
    """Filter the NOISE messages at their loggers; other messages of those loggers still pass. Called by
    the command line before a command's module imports bitsandbytes, which logs its message on import."""
    for name, start in NOISE:
        logging.getLogger(name).addFilter(_DropNoise(start))


def _install_handler() -> None:
    if not any(isinstance(h, _Handler) for h in LOG.handlers):
        handler = _Handler()
        handler.setFormatter(_Formatter())
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    # its own handler only: a library that configures the root logger (rouge-score's first score() does,
    # by logging at the root) would otherwise print every later line twice, as `INFO:ftbench:...`
    LOG.propagate = False


def set_level(name: str) -> None:
    """The `ftbench` logger's level by name (debug, info, warning, error), for FTBENCH_LOG or a flag.
    It is also put in FTBENCH_LOG, which a stage's `configure` and the ranks torchrun starts read."""
    if name.lower() not in LEVELS:
        raise UserError(
            f"log level {name!r} is not one of {', '.join(LEVELS)}; set FTBENCH_LOG to one of them"
        )
    LOG.setLevel(LEVELS[name.lower()])
    os.environ["FTBENCH_LOG"] = name.lower()


def configure() -> None:
    """At stage start: FTBENCH_LOG's level, and the hub's download bars where they can redraw."""
    set_level(os.environ.get("FTBENCH_LOG") or "info")
    _hub_download_bars(on=sys.stderr.isatty() and LOG.isEnabledFor(logging.INFO))


def _hub_download_bars(on: bool) -> None:
    """transformers' per-tensor loading bars stay off: one per model load, they drown the stage's own
    lines. The hub's download bars (a 2 GB model takes minutes) are shown on a terminal; without one
    they would redraw ten times a second into the log."""
    import huggingface_hub.utils
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # also turns the hub's off, hence the order
    if on:
        huggingface_hub.utils.enable_progress_bars()


def bar(desc: str, total: int, unit: str = "it", initial: int = 0) -> tqdm:
    """One long phase's progress (use it as a context manager): a bar redrawn in place on a terminal, a
    plain line every PLAIN_EVERY_S without one, nothing on ranks other than 0 or below the info level."""
    shown = _main_rank() and LOG.isEnabledFor(logging.INFO)
    common = dict(desc=desc, total=total, unit=unit, initial=initial, disable=not shown)
    if sys.stderr.isatty():
        return tqdm(file=sys.stderr, dynamic_ncols=True, **common)
    # miniters=1: the clock is read at every update, so a line is due PLAIN_EVERY_S after the last one
    return tqdm(
        file=_Lines(),
        mininterval=PLAIN_EVERY_S,
        maxinterval=PLAIN_EVERY_S,
        miniters=1,
        bar_format=PLAIN_FORMAT,
        **common,
    )


def _main_rank() -> bool:
    # imported here: the command line imports this module, and `ftbench --help` must not import torch
    from ftbench.common import distributed

    return distributed.is_main()


class _Lines:
    """tqdm's output file without a terminal: each redraw becomes one info line (the final state is
    drawn twice by tqdm when the last update was drawn too; the repeat is dropped)."""

    def __init__(self) -> None:
        self.last = ""

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line and line != self.last:
            LOG.info(line)
            self.last = line

    def flush(self) -> None:
        pass


_install_handler()
