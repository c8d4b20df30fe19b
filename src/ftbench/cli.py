"""`ftbench <command> [args]` (or `python -m ftbench <command> [args]`): every pipeline stage and tool.

`ftbench --help` lists the commands; `ftbench <command> --help` says what one takes and reads. dvc.yaml's
stages run these commands, so what a stage runs is this module, the command's module and their imports.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from ftbench.common import commands, config, gpus, progress
from ftbench.common.errors import UserError, exit_for_user_error

# Forward passes change shape from one micro-batch to the next; with fixed-size segments the CUDA
# caching allocator fragments and the device holds several GiB more than torch uses. torch reads the
# setting when CUDA starts, which `import bitsandbytes` already does: it is set before the command's
# imports. A user's own setting wins.
CUDA_ALLOCATOR = ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def top_parser() -> commands.Parser:
    ap = commands.Parser(
        prog="ftbench",
        description="QLoRA, GaLore and a QLoRA -> GaLore hybrid, compared: `dvc repro` runs the commands\n"
        "below in order (see dvc.yaml); each also runs alone.",
        epilog=f"{commands.overview()}\n\n`ftbench <command> --help` says what a command takes and reads.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_log_level(ap)
    ap.add_argument(
        "command", nargs="?", choices=commands.COMMANDS, metavar="command", help="one of the commands below"
    )
    # everything after the command is the command's own, --help included
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return ap


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = top_parser()
    try:
        args = ap.parse_args(argv)
    except UserError as err:
        exit_for_user_error(err)
    if args.command is None:  # a usage error, but a newcomer's first try: show what there is
        ap.print_help(sys.stderr)
        raise SystemExit(2)
    prepare_process()
    run(lambda rest: stage(args.command, rest), args.args)


def stage(command: str, argv: list[str]) -> None:
    """The command, on the GPUs it claims first (ftbench.common.gpus): their lock files stay open, so no
    other stage takes them, until it returns."""
    wanted = commands.COMMANDS[command].gpus
    devices = gpus.pool() if wanted and not {"-h", "--help"} & set(argv) else []
    held = gpus.claim(devices, wanted(config.load()), command) if devices else []  # params only with GPUs
    try:
        importlib.import_module(f"ftbench.stages.{command}").main(argv)
    finally:
        for fd in held:
            os.close(fd)


def prepare_process() -> None:
    """What must hold before a command imports torch's CUDA users: the allocator setting, and the filter
    on bitsandbytes' message, which it logs as it is imported."""
    os.environ.setdefault(*CUDA_ALLOCATOR)
    progress.quiet_third_party()


def run(command: Callable[[list[str]], None], argv: list[str]) -> None:
    """A command's `main(argv)`, its errors as the user sees them: a UserError is one `ftbench: error:`
    line and exit 2, Ctrl-C exits 130, running out of GPU memory exits 3 with the params that lower it;
    anything else is a bug and keeps its traceback."""
    try:
        progress.configure()
        command(argv)
    except UserError as err:
        exit_for_user_error(err)
    except KeyboardInterrupt:
        print("ftbench: interrupted; no outputs were written", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if type(err).__name__ != "OutOfMemoryError":  # torch.cuda.OutOfMemoryError; torch not imported
            raise
        print(f"ftbench: error: {out_of_memory_message()}", file=sys.stderr)
        sys.exit(3)


def out_of_memory_message() -> str:
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return (
        f"CUDA out of memory (peak {peak:.2f} GiB allocated by torch); lower the micro-batch "
        "(methods.*.micro_batch_tokens, or methods.*.batch_size where it is null: raising grad_accum "
        "keeps the effective batch; evaluate.batch_size), set train.gradient_checkpointing: true "
        "(with train.cuda_graphs: false), shorten data.max_length, or raise resources.max_gpu_memory_gib"
    )
