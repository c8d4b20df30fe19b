#!/usr/bin/env bash
# The real-weight study on a GPU machine: the embedded Gemma 3 270M with its real weights, fine-tuned on GSM8K
# by every method of params.yaml through the real `dvc repro`, at the seed's hyperparameters, 512 tokens
# and 256 new tokens. What it publishes comes back in $OUT/study.tgz (a results/<date>-<name>/ folder keeps it).
#
# The study lives in $STUDY (default /tmp/study): it lasts as long as the machine stays warm, so a call that
# a timeout stopped is continued by the next one (DVC skips finished stages, a stopped training resumes
# from its checkpoint). Sizes and seeds come from the environment:
#   TRAIN, VALIDATION, TEST (default: the dataset's, below) SEEDS=0,1,2 NEW_TOKENS=256 STUDY_S=540
#   GPUS=<all the machine has>  (seeds shared out over them, one study a GPU, side by side)
#   MODEL=embedded  (or a local model folder; or random:<shape of ftbench.benchmark.measure.SHAPES>, e.g. random:gemma3-1b for
#                    the seed-shaped study, random:tiny for a smoke test: random weights and TOKENIZER's
#                    tokenizer, built once into /tmp/random-<shape>)
#   PEER_S=0  (seconds for the stock recipe, ../shared/bench/peer_bench.py as .gpu/peer_bench.py, on the study's
#              training rows after a `dvc repro` that finished: the speed ratios then come from the same call)
#   DATASET=gsm8k  (.gpu/gsm8k.jsonl, its question/answer fields; TRAIN=5000 VALIDATION=200 TEST=1000)
#         | alpaca (.gpu/alpaca_en_demo.json, 999 rows; TRAIN=700 VALIDATION=20 TEST=250: 970 fit 512 tokens)
#   DVC_CACHE=  (a DVC cache folder shared by several studies of the same params, e.g. one a GPU, each given
#                its share of the stages as TARGETS: a stage one study ran, the next `dvc repro` of another
#                restores from DVC's run-cache instead of running it, so one study ends up holding them all)
#   MAX_GPU_GIB=  (resources.max_gpu_memory_gib for every stage, e.g. 8 with TARGETS=train@qlora)
#   SET=  (params.yaml values, as `dvc exp run -S` takes them: e.g. SET="methods.galore.galore.refresh_streams=2")
#   EVAL_BATCH=auto  (evaluate.batch_size: prompts a generate call; auto sizes the calls by the GPU's free memory)
#   TOKENIZER=/tmp/tok  (model.tokenizer: transformers 5.17 misreads the GGUF's tokenizer, and the model stage
#                        refuses it; .gpu/tok.tgz holds one saved by transformers 5.24: tar xzf .gpu/tok.tgz -C /tmp)
# Needs, on the GPU machine (docs/gpu.md):
#   /tmp/site       the wheels (.whl, DVC=1 ../shared/gpu/wheels.sh), installed by this script if missing
#   /tmp/gguf-site  the GGUF part packages, rebuilt by tools/gguf_transfer.py unpack in earlier calls
#   .gpu/gsm8k.jsonl  a copy of ../shared/data/gsm8k/train.jsonl (JSON lines of {question, answer}), or
#   .gpu/alpaca_en_demo.json  a copy of ../shared/data/alpaca_en_demo.json
set -uo pipefail
STUDY=${STUDY:-/tmp/study}
export SEEDS=${SEEDS:-0,1,2}
export NEW_TOKENS=${NEW_TOKENS:-256}
export PYTHONPATH=/tmp/site:${GGUF_SITE:-/tmp/gguf-site}:$STUDY/src PYTHONUNBUFFERED=1 FTBENCH_MLFLOW=off
if ! python3 -c "import dvc, galore_torch" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1 || exit 9
  # byte-compile once on all cores, as a pip-installed image is: every stage's start-up then reads .pyc files
  python3 -m compileall -q -j 0 /tmp/site "${GGUF_SITE:-/tmp/gguf-site}" >/dev/null 2>&1
fi
# On a machine of several GPUs the seeds are shared out round robin, one study (its own $STUDY-gN directory,
# log and archive) a GPU, run side by side: each stage still has a GPU to itself, so its wall time and peak
# memory mean what they do on one GPU. The report over all seeds is made afterwards (tools/merge_studies.py).
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
if [ -z "${STUDY_CHILD:-}" ] && [ "$GPUS" -gt 1 ]; then
  IFS=, read -ra seeds <<<"$SEEDS"
  for ((g = 0; g < GPUS && g < ${#seeds[@]}; g++)); do
    mine=$(for ((i = g; i < ${#seeds[@]}; i += GPUS)); do echo "${seeds[i]}"; done | paste -sd,)
    STUDY_CHILD=$g CUDA_VISIBLE_DEVICES=$g STUDY=$STUDY-g$g SEEDS=$mine bash "$0" >"${OUT:-/tmp}/gpu$g.log" 2>&1 &
  done
  wait
  tail -n 30 "${OUT:-/tmp}"/gpu*.log
  exit 0
fi
if [[ "${MODEL:-}" == random:* ]]; then  # random weights of a bench shape with the real tokenizer
  shape=${MODEL#random:} MODEL=/tmp/random-${MODEL#random:}
  [ -d "$MODEL" ] || python3 -c "import sys; sys.path.insert(0, 'src')
from transformers import AutoTokenizer
from ftbench.benchmark.measure import build_model
build_model('$shape', AutoTokenizer.from_pretrained('${TOKENIZER:?random weights need TOKENIZER}'), '$MODEL.new')" &&
    mv "$MODEL.new" "$MODEL" || exit 3
  export MODEL
fi
# the data the study's data stage reads, copied into the study when it is made: refuse before any time goes
# (a call's carry brings it only for that call: the next call's tree no longer has it)
data=.gpu/$([ "${DATASET:-gsm8k}" = alpaca ] && echo alpaca_en_demo.json || echo gsm8k.jsonl)
[ -f "$data" ] || [ -d "$STUDY" ] || { echo "h200_study: $data is missing: carry it in the call that starts the study"; exit 6; }
if [ ! -d "$STUDY" ]; then
  mkdir -p "$STUDY" && tar cf - --exclude=./.whl --exclude=./.git --exclude=./.venv --exclude=./.gpu/gguf . |
    tar xf - -C "$STUDY"
  cd "$STUDY" || exit 1
  python3 - <<'PY' || { echo "h200_study: params.yaml could not be written (a SET key?)"; cd / && rm -rf "$STUDY"; exit 5; }
import os, yaml
p = yaml.safe_load(open("params.yaml"))
p["model"].update(source=os.environ.get("MODEL", "embedded"), dtype="bfloat16", tokenizer=os.environ.get("TOKENIZER") or None)
p["seeds"] = [int(s) for s in os.environ["SEEDS"].split(",")]
name = os.environ.get("DATASET", "gsm8k")
sources = {  # the copies of ../shared/data the calls carry, and their default sizes (train, validation, test)
    "gsm8k": (
        {"source": ".gpu/gsm8k.jsonl", "fields": {"instruction": "question", "output": "answer"}},
        (5000, 200, 1000),
    ),
    "alpaca": ({"source": ".gpu/alpaca_en_demo.json", "fields": {}}, (700, 20, 250)),  # 970 of 999 rows fit 512 tokens
}
source, sizes = sources[name]
p["data"]["datasets"] = {name: {**p["data"]["datasets"]["builtin"], **source}}
p["data"]["sizes"] = {k: int(os.environ.get(k.upper()) or n) for k, n in zip(("train", "validation", "test"), sizes)}
p["data"]["max_length"] = 512
batch = os.environ.get("EVAL_BATCH") or "auto"
p["evaluate"].update(max_new_tokens=int(os.environ["NEW_TOKENS"]), batch_size=batch if batch == "auto" else int(batch))
if os.environ.get("MAX_GPU_GIB"):  # resources.max_gpu_memory_gib: e.g. 8 for a capped QLoRA stage
    p["resources"]["max_gpu_memory_gib"] = float(os.environ["MAX_GPU_GIB"])
from ftbench.common.config import set_key  # $STUDY/src is on PYTHONPATH
for item in os.environ.get("SET", "").split():  # key.path=value, the value read as YAML
    key, _, value = item.partition("=")
    set_key(p, key, value)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
  rm -f metrics/resources/*.json  # the committed CPU records: the tables must hold this study's stages only
  echo /.gpu/ >> .gitignore
  git init -q && git add -A && git -c user.name=ftbench -c user.email=ftbench@localhost commit -qm study
  [ -z "${DVC_CACHE:-}" ] || python3 -m dvc cache dir --local "$DVC_CACHE"
else
  cd "$STUDY" || exit 1
fi
[ -f "$data" ] || { echo "h200_study: $STUDY/$data is missing: copy it there (the study reads its own copy)"; exit 6; }
# a target that names no stage would make this call's `dvc repro` run nothing: refuse it before the time goes
if [ -n "${TARGETS:-}" ]; then
  stages=$(python3 -m dvc stage list --name-only)
  for target in $TARGETS; do
    grep -qx "$target" <<<"$stages" || { echo "h200_study: no stage '$target'; the stages: $(paste -sd' ' <<<"$stages")"; exit 2; }
  done
fi
start=$(date +%s.%N)
# TARGETS: stages to reach first, when time is short
timeout "${STUDY_S:-540}" python3 -m dvc repro ${TARGETS:-}
rc=$?
echo "dvc repro rc=$rc"
# the study's `dvc repro` time is the sum over the calls that ran it
python3 -c "print($(date +%s.%N) - $start)" >> repro_seconds.txt
python3 tools/stage_table.py "$(python3 -c "print(sum(map(float, open('repro_seconds.txt'))))")" | tee stage_table.md
if [ "$rc" = 0 ] && [ "${PEER_S:-0}" -gt 0 ]; then
  # the stock recipe reads Alpaca-style JSON: the study's own training rows (the data stage's), in that form
  python3 - <<'PY' || exit 4
import json, sys
sys.path.insert(0, "src")
from ftbench.common import config, paths
name = next(iter(config.load().data.datasets))
rows = [json.loads(line) for line in open(paths.split_file(name, "train"))]
alpaca = [{"instruction": r["messages"][-1]["content"], "input": "", "output": r["answer"]} for r in rows]
json.dump(alpaca, open("/tmp/peer-rows.json", "w"))
PY
  timeout "$PEER_S" python3 .gpu/peer_bench.py --methods qlora,galore --steps 6 --seq 512 --data /tmp/peer-rows.json \
    --tokenizer "${TOKENIZER:-models/base}" 2>&1 | grep '^{"' | tee peer.jsonl
fi
if [ -n "${OUT:-}" ]; then
  # $OUT takes at most 8 files: one archive of what results/ publishes, even after a timeout
  tar czf "$OUT/study${STUDY_CHILD:+-g$STUDY_CHILD}.tgz" params.yaml dvc.lock metrics stage_table.md repro_seconds.txt peer.jsonl 2>/dev/null
fi
