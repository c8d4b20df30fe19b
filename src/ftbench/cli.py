"""`ftbench <command> [args]` (or `python -m ftbench <command> [args]`): every pipeline stage and tool.

`ftbench --help` lists the commands; `ftbench <command> --help` says what one takes and reads. dvc.yaml's
stages run these commands, so what a stage runs is this module, the command's module and their imports.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ftbench import commands, progress
from ftbench.errors import UserError, exit_for_user_error

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
    os.environ.setdefault(*CUDA_ALLOCATOR)
    progress.quiet_third_party()  # before the command's imports: bitsandbytes logs on import
    importlib.import_module(f"ftbench.{args.command}").main(args.args)
