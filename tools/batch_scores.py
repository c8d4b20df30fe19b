"""Score a study's saved answers batch by batch, in the order generate.generate made them.

generate.generate sorts the test prompts by token length and generates `evaluate.batch_size` of them at a
time, left-padded. A defect that depends on the batch (transformers#47651: on the H200 the first batch's
left-padded prefill corrupted every answer's first token) shows up as one batch scoring apart from the
rest, in every model alike. This prints BLEU-4, ROUGE-L and exact match per model and seed, over all rows
and per batch, and the share of answers that open with a character outside ASCII.

usage: python tools/batch_scores.py STUDY_DIR --tokenizer DIR   (the tokenizer the study's data stage used)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", type=Path, help="the study's folder (params.yaml, metrics/)")
    ap.add_argument("--tokenizer", type=Path, required=True)
    args = ap.parse_args()
    tokenizer_dir = args.tokenizer.resolve()
    os.chdir(args.study)  # ftbench.paths are relative to the study's root
    from ftbench import chat
    from ftbench.common import config, paths
    from ftbench.common.atomic import read_jsonl
    from ftbench.evaluation import score
    from ftbench.loading import load_tokenizer

    p = config.load()
    tokenizer = load_tokenizer(tokenizer_dir)
    print("| model | run | rows | BLEU-4 | ROUGE-L | exact match | non-ASCII first character |")
    print("|---|---|---|---|---|---|---|")
    for name in ["base", *p.methods]:
        for run in p.runs(name):
            path = paths.predictions_file(name, run)
            if not path.exists():
                continue  # a run the study did not finish
            rows = read_jsonl(path)
            lengths = [len(chat.prompt_ids(tokenizer, [user(r["prompt"])])) for r in rows]
            order = sorted(range(len(rows)), key=lambda i: lengths[i])  # generate.generate's order
            bs = p.evaluate.batch_size
            parts = {"all": order} | {
                f"batch {b + 1}": order[s : s + bs] for b, s in enumerate(range(0, len(order), bs))
            }
            for part, idx in parts.items():
                chosen = [rows[i] for i in idx]
                s = score.aggregate(chosen)
                odd = sum(not r["prediction"][:1].isascii() for r in chosen) / len(chosen)
                em = f"{s[score.EXACT_MATCH]:.1f}" if score.EXACT_MATCH in s else ""
                print(
                    f"| {name} | {run.key} {part} | {len(chosen)} | {s['bleu4']:.2f} | {s['rougeL']:.2f} "
                    f"| {em} | {100 * odd:.0f}% |"
                )


def user(text: str) -> dict:
    return {"role": "user", "content": text}


if __name__ == "__main__":
    main()
