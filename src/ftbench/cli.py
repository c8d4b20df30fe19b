"""`ftbench <command> [args]`: the same as `python -m ftbench.<command> [args]`.

usage: ftbench {model,data,train,merge,evaluate,report,bench} [args]
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("model", "data", "train", "merge", "evaluate", "report", "bench")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: ftbench {{{','.join(COMMANDS)}}} [args]", file=sys.stderr)
        raise SystemExit(2)
    importlib.import_module(f"ftbench.{argv[0]}").main(argv[1:])
