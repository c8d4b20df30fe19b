#!/usr/bin/env bash
# The seed-shaped H200 measurement in one device call (bound each part; logs and records go to $OUT):
#   1. the seed-shaped `dvc repro` (bench/h200_repro.sh; scale it with TRAIN/VALIDATION/TEST),
#   2. the bench at params.yaml's rows per step, plus the 8 GiB variant, and 2,000 greedy answers,
#   3. the stock recipe on the same data (peer_bench.py), for the ratios.
# Needs in the copied tree: .whl/ (DVC=1 ../shared/gpu/wheels.sh), .gpu/tok.tgz (the Gemma 3 tokenizer
# folder as tok/), .gpu/gsm8k.jsonl and .gpu/peer_bench.py (../shared copies).
# Example (device tool, carry [".whl", ".gpu"]): TRAIN=1000 TEST=400 bash bench/h200_session.sh
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1 || exit 9
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 FTBENCH_MLFLOW=off
tar xzf .gpu/tok.tgz -C /tmp
# bench and peer read Alpaca-style JSON: the repro's GSM8K rows in that form, so all three train on the same data
python3 -c "import json; rows = [json.loads(l) for l in open('.gpu/gsm8k.jsonl')]
json.dump([{'instruction': r['question'], 'input': '', 'output': r['answer']} for r in rows], open('/tmp/gsm8k.json', 'w'))"
# the bench first: the repro rewrites params.yaml (model, data, evaluation sizes) for its study
timeout "${BENCH_S:-150}" python3 -m ftbench bench --tokenizer /tmp/tok --data /tmp/gsm8k.json \
  --steps 8 --eval-answers 2000 --eval-new-tokens 256 --eval-batch 1024 -- \
  qlora galore qlora:train.gradient_checkpointing=true > "$OUT/bench.jsonl" 2> "$OUT/bench.err"
timeout "${PEER_S:-120}" python3 .gpu/peer_bench.py --methods qlora,galore --steps 6 --seq 512 \
  --data /tmp/gsm8k.json --tokenizer /tmp/tok > "$OUT/peer.txt" 2>&1
timeout "${REPRO_S:-300}" bash bench/h200_repro.sh > "$OUT/repro.log" 2>&1
echo "repro rc=$?" >> "$OUT/repro.log"
# what ran comes back even when the timeout stopped dvc repro ($OUT takes at most 8 files: one archive)
tar czf "$OUT/repro.tgz" metrics dvc.lock params.yaml stage_table.md 2>/dev/null
