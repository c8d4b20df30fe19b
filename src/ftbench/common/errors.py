"""User errors end a stage with one readable line, never a traceback."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

# Hugging Face and OpenAI-style tokens: never printed, logged or tracked, whatever message carries them.
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9]{8,})")
# A URL's password (scheme://user:password@host, e.g. an MLflow server's or a database's): the user and
# host stay readable. The password runs to the last "@" of the authority, as urllib reads it, so one
# holding an "@" is masked whole; "/", "?", "#" and spaces end the authority.
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*(?=@)", re.IGNORECASE)


class UserError(Exception):
    """A problem the user can fix (bad params, malformed data, missing model); the message says how."""


def exit_for_user_error(err: UserError) -> NoReturn:
    print(f"ftbench: error: {redact(str(err))}", file=sys.stderr)
    sys.exit(2)


def redact(text: str) -> str:
    return URL_PASSWORD.sub(r"\1***", SECRET_VALUE.sub("***", text))
