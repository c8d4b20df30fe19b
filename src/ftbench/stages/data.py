"""Data stage: every dataset of params.yaml read, normalised, tokenized and split into data/prepared/."""

from __future__ import annotations

from ftbench.common import commands, config, paths, tracking
from ftbench.common.atomic import atomic_path, write_json, write_jsonl
from ftbench.common.progress import LOG
from ftbench.data.prepare import prepare
from ftbench.loading import load_tokenizer


def run(p: config.Params) -> None:
    tokenizer = load_tokenizer(paths.BASE)
    summary = {}
    with atomic_path(paths.PREPARED, is_dir=True) as out:
        for name, ds in p.data.datasets.items():
            prepared, counts = prepare(name, ds, p, tokenizer)
            for split, rows in prepared["splits"].items():
                write_jsonl(out / name / f"{split}.jsonl", rows)
            summary[name] = {"format": prepared["format"], **vars(counts)}
            LOG.info(
                f"data: {name}: {counts.splits} ({prepared['format']}, {counts.mean_tokens} tokens mean)"
            )
        write_json(paths.DATA_SUMMARY, summary)


def main(argv: list[str]) -> None:
    p, _ = commands.parse("data", argv)
    with tracking.stage("data", p) as st:
        run(p)
        st.artifacts.append(paths.DATA_SUMMARY)
