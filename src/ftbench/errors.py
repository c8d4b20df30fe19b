"""User errors end a stage with one readable line, never a traceback."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import NoReturn

# Hugging Face and OpenAI-style tokens: never printed, logged or tracked, whatever message carries them.
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9]{8,})")
# A URL's password (scheme://user:password@host, e.g. an MLflow server's or a database's): the user and
# host stay readable. The password runs to the last "@" of the authority, as urllib reads it, so one
# holding an "@" is masked whole; "/", "?", "#" and spaces end the authority.
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*(?=@)", re.IGNORECASE)


class UserError(Exception):
    """A problem the user can fix (bad params, malformed data, missing model); the message says how."""


def stage_main(fn: Callable[[list[str]], None]) -> Callable[[list[str] | None], None]:
    """Wrap a stage entry point: a UserError prints `ftbench: error: ...` and exits 2."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> None:
        from ftbench import progress  # imports this module: here, not at the top

        try:
            progress.configure()
            fn(sys.argv[1:] if argv is None else argv)
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

    return main


def exit_for_user_error(err: UserError) -> NoReturn:
    print(f"ftbench: error: {redact(str(err))}", file=sys.stderr)
    sys.exit(2)


def redact(text: str) -> str:
    return URL_PASSWORD.sub(r"\1***", SECRET_VALUE.sub("***", text))


def out_of_memory_message() -> str:
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return (
        f"CUDA out of memory (peak {peak:.2f} GiB allocated by torch); lower the micro-batch "
        "(methods.*.micro_batch_tokens, or methods.*.batch_size where it is null: raising grad_accum "
        "keeps the effective batch; evaluate.batch_size), set "
        "train.gradient_checkpointing: true, shorten data.max_length, or raise resources.max_gpu_memory_gib"
    )
