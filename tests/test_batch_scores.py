"""tools/batch_scores.py: a study's saved answers scored per batch, in generate.generate's order."""

import subprocess
import sys

from ftbench import chat
from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl, write_jsonl
from ftbench.evaluation import score
from ftbench.loading import load_tokenizer

from .conftest import ROOT, write_params
from .report.fabricate import fabricate_stage_outputs

SCRIPT = ROOT / "tools" / "batch_scores.py"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_a_batch_whose_answers_are_corrupted_scores_apart_from_the_others(project, tiny_model_dir):
    write_params(project, tiny_model_dir, **{"evaluate.batch_size": 2})
    p = config.load()
    fabricate_stage_outputs(p, final_answers=set(p.data.datasets))
    run = p.runs("qlora")[0]
    rows = read_jsonl(paths.predictions_file("qlora", run))
    tokenizer = load_tokenizer(tiny_model_dir)
    length = {id(r): len(chat.prompt_ids(tokenizer, [user(r["prompt"])])) for r in rows}
    first = sorted(rows, key=lambda r: length[id(r)])[:2]  # the two shortest prompts: batch 1
    for r in first:
        r["prediction"] = "힐 " + r["prediction"]  # what the H200's corrupted prefill did to batch 1
    write_jsonl(paths.predictions_file("qlora", run), rows)

    out = subprocess.run(
        [sys.executable, SCRIPT, str(project), "--tokenizer", str(tiny_model_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith(f"| qlora | {run.key} batch 1 |"))
    assert line.endswith("| 100% |")
    second = next(x for x in out.splitlines() if x.startswith(f"| qlora | {run.key} batch 2 |"))
    assert second.endswith("| 0% |")
    bleu = f"{score.aggregate(first)['bleu4']:.2f}"
    assert f"| 2 | {bleu} |" in line
