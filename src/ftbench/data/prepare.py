"""A dataset, read, normalised to chat turns, tokenized and split (the data stage's work).

Local JSON, JSON Lines and CSV are read with the standard library rather than `datasets`, so that a
malformed file is reported as one line with its row number; Parquet goes through pyarrow and hub
datasets through `datasets.load_dataset`.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ftbench import chat
from ftbench.common import config
from ftbench.common.errors import UserError
from ftbench.data import builtin

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


@dataclass
class Example:
    messages: list[dict]
    answer: str

    def texts(self) -> list[str]:
        return [m["content"] for m in self.messages] + [self.answer]


@dataclass
class Counts:
    rows_read: int = 0
    duplicates: int = 0
    empty: int = 0
    rows_with_chat_markup: int = 0  # distinct usable rows holding e.g. "<end_of_turn>" (tokenized as text)
    overlong_dropped: int = 0
    overlong_truncated: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    mean_tokens: float = 0.0


# ---------------------------------------------------------------- reading


def read_rows(ds: config.DatasetParams, seed: int) -> list[dict]:
    """Raw rows of one dataset, in file order."""
    if ds.source == "builtin":
        return builtin.generate(seed=seed)
    if ds.source.startswith("hf:"):
        return _read_hub(ds)
    path = Path(ds.source)
    if not path.exists():
        raise UserError(f"data source {ds.source}: no such file or folder; fix data.datasets.*.source")
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UserError(f"data source {ds.source}: no {', '.join(SUFFIXES)} files in the folder")
    return [row for f in files for row in _read_file(f)]


def _read_file(path: Path) -> list[dict]:
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises several unrelated types for a bad file
            raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM is accepted
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); re-save it as UTF-8") from None
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        for n, row in enumerate(rows, 2):  # line 1 is the header
            if None in row:
                raise UserError(
                    f"{path}: line {n}: more cells than the header has columns; quote commas in text"
                )
        return rows
    if path.suffix == ".jsonl":
        return [_json(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = _json(text, path, None)
    if isinstance(rows, dict) and isinstance(rows.get("data"), list):
        rows = rows["data"]
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON array of objects (or use .jsonl, one object a line)")
    return rows


def _json(text: str, path: Path, line: int | None) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {line}" if line else f"line {err.lineno}"
        raise UserError(f"{path}: {where}: malformed JSON ({err.msg})") from None


def _read_hub(ds: config.DatasetParams) -> list[dict]:
    import datasets

    name = ds.source.removeprefix("hf:")
    try:
        return datasets.load_dataset(name, ds.subset, split=ds.split).to_list()
    except Exception as err:  # offline, gated, missing and malformed all surface as different types
        raise UserError(
            f"dataset {name}: could not load split {ds.split!r} from the hub ({type(err).__name__}); "
            "check the id, HF_TOKEN and network, or point data.datasets.*.source at a local file"
        ) from None


# ---------------------------------------------------------------- normalising


def detect_format(row: dict, declared: str) -> str:
    if declared != "auto":
        return declared
    if "messages" in row:
        return "messages"
    if "conversations" in row:  # sharegpt's from/value turns, or role/content turns under that name
        return "sharegpt" if _is_sharegpt(row["conversations"]) else "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "instruction" in row and "response" in row:
        return "dolly"
    raise UserError(
        f"cannot tell the data format from columns {sorted(row)}; set data.datasets.*.format "
        "(alpaca, dolly, messages, sharegpt) and map columns with data.datasets.*.fields"
    )


def _is_sharegpt(turns: object) -> bool:
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]


def normalise(row: dict, fmt: str, where: str) -> Example | None:
    """One row -> chat turns plus the answer to learn; None for a row with an empty answer."""
    try:
        if fmt in ("alpaca", "dolly"):
            answer_key, context_key = ("output", "input") if fmt == "alpaca" else ("response", "context")
            prompt = _text(row["instruction"])
            context = _text(row.get(context_key) or "")
            user = f"{prompt}\n\n{context}" if context.strip() else prompt
            messages, answer = [{"role": "user", "content": user}], _text(row[answer_key])
        else:
            turns = row["messages"] if "messages" in row else row["conversations"]
            messages = [_turn(t, fmt) for t in turns]
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError("the last turn must be the assistant's answer")
            messages, answer = messages[:-1], messages[-1]["content"]
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise UserError(f"{where}: malformed {fmt} row ({detail}); fix the row or map fields") from None
    if not answer.strip() or not any(m["content"].strip() for m in messages if m["role"] == "user"):
        return None
    return Example(messages, answer.strip())


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _turn(turn: object, fmt: str) -> dict:
    if not isinstance(turn, dict):
        raise TypeError("each turn must be an object")
    if fmt == "sharegpt":
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            raise ValueError(f"unknown speaker {turn['from']!r}")
        return {"role": role, "content": _text(turn["value"])}
    if turn["role"] not in ("system", "user", "assistant"):
        raise ValueError(f"unknown role {turn['role']!r}")
    return {"role": turn["role"], "content": _text(turn["content"])}


def rename_fields(row: dict, fields: dict[str, str]) -> dict:
    return {**row, **{std: row[col] for std, col in fields.items() if col in row}}


# ---------------------------------------------------------------- tokenizing and splitting


def tokenize(tokenizer, ex: Example, max_length: int, overlong: str, counts: Counts) -> dict | None:
    ids, labels = chat.encode(tokenizer, ex.messages, ex.answer)
    prompt_len = labels.count(chat.IGNORE)
    if len(ids) > max_length:
        if overlong == "drop" or prompt_len >= max_length - 1:
            counts.overlong_dropped += 1
            return None
        counts.overlong_truncated += 1
        ids = ids[:max_length]
    return {"messages": ex.messages, "answer": ex.answer, "input_ids": ids, "prompt_len": prompt_len}


def prepare(name: str, ds: config.DatasetParams, p: config.Params, tokenizer) -> tuple[dict, Counts]:
    """Split one dataset: shuffle by seed, then fill test, validation and train in that order."""
    counts = Counts()
    rows = read_rows(ds, p.seed)
    counts.rows_read = len(rows)
    if not rows:
        raise UserError(f"dataset {name}: no rows in {ds.source}")
    fmt = detect_format(rename_fields(_as_dict(rows[0], name, 0), ds.fields), ds.format)
    seen, examples = set(), []
    for i, row in enumerate(rows):
        ex = normalise(rename_fields(_as_dict(row, name, i), ds.fields), fmt, f"dataset {name} row {i + 1}")
        if ex is None:
            counts.empty += 1
            continue
        key = json.dumps([ex.messages, ex.answer])
        if key in seen:
            counts.duplicates += 1
            continue
        seen.add(key)
        examples.append(ex)
        if any(chat.has_markup(tokenizer, text) for text in ex.texts()):
            counts.rows_with_chat_markup += 1
    random.Random(p.seed).shuffle(examples)
    sizes = {"test": p.data.sizes.test, "validation": p.data.sizes.validation, "train": p.data.sizes.train}
    splits: dict[str, list[dict]] = {s: [] for s in sizes}
    pending = iter(examples)
    for split, size in sizes.items():
        while len(splits[split]) < size:
            ex = next(pending, None)
            if ex is None:
                usable = sum(len(v) for v in splits.values())
                raise UserError(
                    f"dataset {name}: only {usable} usable examples, data.sizes asks for "
                    f"{sum(sizes.values())}; lower data.sizes or raise data.max_length"
                )
            encoded = tokenize(tokenizer, ex, p.data.max_length, p.data.overlong, counts)
            if encoded:
                splits[split].append(encoded)
    counts.splits = {s: len(v) for s, v in splits.items()}
    lengths = [len(r["input_ids"]) for v in splits.values() for r in v]
    counts.mean_tokens = round(sum(lengths) / len(lengths), 1)
    return {"format": fmt, "splits": splits}, counts


def _as_dict(row: object, name: str, i: int) -> dict:
    if not isinstance(row, dict):
        raise UserError(f"dataset {name} row {i + 1}: expected an object with named fields")
    return row
