"""Outputs appear whole or not at all: everything is written beside its target, then renamed."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staged = tmp / target.name
    if is_dir:
        staged.mkdir()
    try:
        yield staged
        # A rename puts a file over a file in one step, so a reader (or a resume after a kill) never finds
        # it missing. It cannot put a file over a folder, or a folder over a file or a full folder: then the
        # old one moves aside first and is deleted with the temporary folder once the new one is in place.
        folder_involved = staged.is_dir() or (target.is_dir() and not target.is_symlink())
        if folder_involved and os.path.lexists(target):
            os.replace(target, tmp / "replaced")
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(target: str | Path, older_than_s: float) -> None:
    """Delete the temporary folders atomic_path left beside `target` in processes killed mid-write (their
    cleanup never ran); only those untouched for `older_than_s`, as a younger one may be a live write."""
    target = Path(target)
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*"):
        with contextlib.suppress(OSError):  # another process may be removing it too
            if leftover.is_dir() and time.time() - leftover.stat().st_mtime > older_than_s:
                shutil.rmtree(leftover)


def write_json(path: str | Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
