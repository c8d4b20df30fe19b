#!/usr/bin/env bash
# The seed-shaped study as a real `dvc repro` on the GPU machine, then its stage-by-stage table:
# random Gemma-3-1B-shape weights with the real tokenizer, GSM8K rows, 512 tokens, 256 new tokens, every
# method of params.yaml. Run from a copy of the repo (not a git checkout) on the GPU machine, with:
#   .whl/            DVC=1 ../shared/gpu/wheels.sh, installed to /tmp/site and on PYTHONPATH with src/
#   /tmp/tok         the Gemma 3 tokenizer folder (models/base's tokenizer files)
#   .gpu/gsm8k.jsonl a copy of ../shared/data/gsm8k/train.jsonl (JSON lines of {question, answer})
#   FTBENCH_MLFLOW=off         (the GPU machine has no mlflow)
# The seed's sizes are the defaults; the device time is short, so smaller runs are e.g.
#   TRAIN=1000 TEST=400 bash bench/h200_repro.sh
set -euo pipefail
export TRAIN=${TRAIN:-5000} VALIDATION=${VALIDATION:-200} TEST=${TEST:-2000}
python3 - <<'PY'
import os, sys, torch, yaml
sys.path.insert(0, "src")
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig
from ftbench.benchmark.measure import SHAPES
tok = AutoTokenizer.from_pretrained("/tmp/tok")
cfg = Gemma3TextConfig(**SHAPES["gemma3-1b"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained("/tmp/rand1b")
tok.save_pretrained("/tmp/rand1b")
p = yaml.safe_load(open("params.yaml"))
p["model"].update(source="/tmp/rand1b", dtype="bfloat16")
gsm8k = {**p["data"]["datasets"]["builtin"], "source": ".gpu/gsm8k.jsonl",
         "fields": {"instruction": "question", "output": "answer"}}
p["data"]["datasets"] = {"gsm8k": gsm8k}
p["data"]["sizes"] = {k: int(os.environ[k.upper()]) for k in ("train", "validation", "test")}
p["data"]["max_length"] = 512
# evaluate.batch_size stays auto: the calls are sized by the GPU's free memory
p["evaluate"].update(max_new_tokens=256)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
rm -f metrics/resources/*.json  # the committed CPU records: the table must hold this run's stages only
echo /.gpu/ >> .gitignore
git init -q && git add -A && git -c user.name=x -c user.email=x@x commit -qm run
start=$(date +%s.%N)
python3 -m dvc repro
end=$(date +%s.%N)
python3 tools/stage_table.py "$(python3 -c "print($end - $start)")" | tee stage_table.md
