"""What the report reads: the earlier stages' records under metrics/, each model's per-example scores and
the base model's tokenizer; a missing one is named with the command that writes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.common.errors import UserError
from ftbench.evaluation import stats
from ftbench.report.study import EXACT_MATCH


def _missing(path: Path) -> UserError:
    return UserError(f"{path} is missing; run `dvc repro` so every stage before the report has run")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _missing(path) from None


def per_example(name: str, run: config.Run) -> stats.Scores:
    rows = read_jsonl(paths.predictions_file(name, run))
    scores = {"bleu4": np.array([r["bleu_stats"] for r in rows], dtype=float)}
    scores.update({k: np.array([r[k] for r in rows]) for k in ("rouge1", "rouge2", "rougeL")})
    if EXACT_MATCH in rows[0]:  # evaluate scored it on every row of this split
        scores[EXACT_MATCH] = np.array([r[EXACT_MATCH] for r in rows])
    return scores


def base_tokenizer():
    """The base model's tokenizer (the `tokenizers` library alone: no model code to import)."""
    from tokenizers import Tokenizer

    path = paths.BASE / "tokenizer.json"
    if not path.exists():
        raise _missing(path)
    return Tokenizer.from_file(str(path))
