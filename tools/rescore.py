"""Re-score a finished study's saved answers with this checkout's scoring code, without generating again.

Made for the first H200 study (results/2026-11-29-h200-gsm8k-270m-1seed/): it generated its answers
before `generate.answer_text` cut them at the first stop token, and that machine's transformers (5.17)
decoded Gemma's <end_of_turn> as text, so each answer that ended its turn ended in the literal
"<end_of_turn>" and no final answer could match. This cuts every saved prediction at the first `--cut`
text (what the fixed evaluate stage does by token id), scores it again (score.example_scores),
rewrites metrics/predictions and metrics/eval, and the report is then rebuilt from them
(`python -m ftbench report`, run in the study's folder).

usage: python tools/rescore.py STUDY_DIR [--cut '<end_of_turn>']
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", type=Path, help="the study's folder (params.yaml, metrics/)")
    ap.add_argument("--cut", default="<end_of_turn>", help="text that ends an answer")
    args = ap.parse_args()
    os.chdir(args.study)  # ftbench.paths are relative to the study's root
    from ftbench.common import config, paths
    from ftbench.common.atomic import read_jsonl, write_json, write_jsonl
    from ftbench.evaluation import score, stats

    p = config.load()
    scorer = score.rouge(p)
    for name in ["base", *p.methods]:
        summary = json.loads((paths.EVAL / f"{name}.json").read_text())
        for run in p.runs(name):
            rows = read_jsonl(paths.predictions_file(name, run))
            graded = stats.has_final_answers([r["reference"] for r in rows])
            for r in rows:
                r["prediction"] = r["prediction"].split(args.cut)[0].strip()
                r.update(score.example_scores(r["prediction"], r["reference"], scorer, graded))
            write_jsonl(paths.predictions_file(name, run), rows)
            summary["runs"][run.key].update(score.aggregate(rows))
        numbers = score.means(summary["runs"])
        summary.update(numbers)
        write_json(paths.EVAL / f"{name}.json", summary)
        print(f"rescore {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in numbers.items()))


if __name__ == "__main__":
    main()
