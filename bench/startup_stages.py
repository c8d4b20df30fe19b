"""Each stage's start-up, one tree's code against another's, stage by stage on the same machine.

Both trees run the same small study (a 2-layer random Gemma 3 with Gemma's tokenizer, QLoRA and GaLore,
16 training rows), each stage as its own cold process, the two trees' runs of a stage back to back. A
stage's `startup_s` (its record: the process's start to its work) and the process's whole wall time are
printed as one JSON line a stage and tree. The wall time also holds what a stage imports inside its
work (peft and galore-torch, where a recipe loads them), which start-up alone would not show.

usage: python bench/startup_stages.py --tokenizer DIR --tree NAME=DIR [--tree NAME=DIR ...] [--out FILE]
A tree is a checkout's root (src/, params.yaml); one with the warm server (src/ftbench/warm.py) is an
older one whose stages run as `python -m ftbench.<stage>`, without the server, as plain `dvc repro` ran them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

STAGES = [
    ("model",),
    ("data",),
    ("train", "qlora"),
    ("train", "galore"),
    ("merge", "qlora"),
    ("evaluate", "base"),
    ("evaluate", "qlora"),
    ("evaluate", "galore"),
    ("report",),
]


def tiny_model(tokenizer_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    from ftbench.benchmark.measure import SHAPES

    tiny = {k: v for k, v in SHAPES["tiny"].items() if k != "vocab_size"}  # the tokenizer's vocabulary

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **tiny,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def study(tree: Path, work: Path, model: Path) -> Path:
    """A copy of the tree's code and params, set to the small study."""
    shutil.copytree(tree / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((tree / "params.yaml").read_text())
    p["model"]["source"] = str(model)
    p["data"]["sizes"] = {"train": 16, "validation": 4, "test": 8}
    p["evaluate"]["max_new_tokens"] = 8
    p["methods"] = {k: v for k, v in p["methods"].items() if k in ("qlora", "galore")}
    p["merge"], p["ensembles"] = {"qlora": p["merge"]["qlora"]}, {}
    for method in p["methods"].values():
        method["epochs"], method["batch_size"], method["grad_accum"] = 1, 4, 2
        method.get("galore", {})["rank"] = 8
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return work


def run_stage(work: Path, stage: tuple[str, ...]) -> dict:
    older = (work / "src/ftbench/warm.py").exists()  # its stages ran as `python -m ftbench.<stage>`
    command = ["-m", f"ftbench.{stage[0]}", *stage[1:]] if older else ["-m", "ftbench", *stage]
    env = {**os.environ, "PYTHONPATH": f"{work / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.time()
    done = subprocess.run([sys.executable, *command], cwd=work, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if done.returncode:
        raise SystemExit(f"{work}: {' '.join(stage)} failed:\n{done.stderr[-3000:]}")
    name = "-".join(stage) if stage[0] != "evaluate" else f"evaluate-{stage[1]}"
    record = work / "metrics/resources" / f"{name}.json"
    startup = json.loads(record.read_text())["startup_s"] if record.exists() else None  # report: none
    return {"stage": " ".join(stage), "startup_s": startup, "process_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--tree", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--work", type=Path, default=Path("/tmp/startup-stages"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    model = tiny_model(args.tokenizer, args.work / "tiny")
    trees = {n: study(Path(d), args.work / n, model) for n, d in (t.split("=", 1) for t in args.tree)}
    for stage in STAGES:
        for name, work in trees.items():
            line = json.dumps({"tree": name, **run_stage(work, stage)})
            print(line, flush=True)
            if args.out:  # as it goes: a run cut short keeps what it measured
                with args.out.open("a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
