#!/usr/bin/env bash
# A real `dvc repro` on the GPU machine: random Gemma-3-1B-shape weights, the real tokenizer, alpaca rows.
# Run from a copy of the repo (not a git checkout) on the GPU machine, with:
#   .whl/            DVC=1 ../shared/gpu/wheels.sh, installed to /tmp/site and on PYTHONPATH with src/
#   /tmp/tok         the Gemma 3 tokenizer folder (models/base's tokenizer files)
#   .gpu/alpaca_en_demo.json   a copy of ../shared/data/alpaca_en_demo.json
#   FTBENCH_MLFLOW=off         (the GPU machine has no mlflow)
set -euo pipefail
python3 - <<'PY'
import sys, torch, yaml
sys.path.insert(0, "src")
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig
from ftbench.bench import SHAPES
tok = AutoTokenizer.from_pretrained("/tmp/tok")
cfg = Gemma3TextConfig(**SHAPES["gemma3-1b"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained("/tmp/rand1b")
tok.save_pretrained("/tmp/rand1b")
p = yaml.safe_load(open("params.yaml"))
p["model"].update(source="/tmp/rand1b", dtype="bfloat16")
p["data"]["datasets"] = {"alpaca": {**p["data"]["datasets"]["builtin"], "source": ".gpu/alpaca_en_demo.json"}}
p["data"]["sizes"] = {"train": 96, "validation": 16, "test": 64}
p["data"]["max_length"] = 512
p["evaluate"].update(max_new_tokens=64, batch_size=64)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
echo /.gpu/ >> .gitignore
git init -q && git add -A && git -c user.name=x -c user.email=x@x commit -qm run
python3 -m dvc repro
