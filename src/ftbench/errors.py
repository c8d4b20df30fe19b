"""User errors end a stage with one readable line, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad params, malformed data, missing model); the message says how."""


def stage_main(fn: Callable[[list[str]], None]) -> Callable[[list[str] | None], None]:
    """Wrap a stage entry point: a UserError prints `ftbench: error: ...` and exits 2."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> None:
        _quiet_progress_bars()
        try:
            fn(sys.argv[1:] if argv is None else argv)
        except UserError as err:
            print(f"ftbench: error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("ftbench: interrupted; no outputs were written", file=sys.stderr)
            sys.exit(130)

    return main


def _quiet_progress_bars() -> None:
    """Per-tensor loading bars drown the stage's own lines in `dvc repro` output."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def one_argument(argv: list[str], choices: list[str], stage: str) -> str:
    """The stage's single argument, which must be one of `choices` (names from params.yaml)."""
    if len(argv) != 1 or argv[0] not in choices:
        raise UserError(
            f"usage: python -m ftbench.{stage} <name>; names in params.yaml: {', '.join(choices)}"
        )
    return argv[0]
