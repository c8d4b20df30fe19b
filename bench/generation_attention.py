"""Greedy generation on the GPU: transformers' eager attention against evaluate's grouped form of it
(GENERATION_ATTENTION), with the dynamic and the static KV cache (compiled too), on a random model of the
1B shape and 1,024 GSM8K test prompts through the data stage's code; 64 new tokens each.

    python3 bench/generation_attention.py PARAMS.yaml MODEL_DIR TOKENIZER_DIR

PARAMS.yaml: a params file whose first dataset is GSM8K (data.sizes.test 1024, data.max_length 512).
Session 29's figures: bench/h200-s29-levers.txt."""

import json
import sys
import time

import torch
from transformers import GenerationConfig

from ftbench.benchmark import measure
from ftbench.common import config
from ftbench.evaluation import generate
from ftbench.loading import load_model, load_tokenizer

NEW_TOKENS = 64
p, model_dir, tokenizer_dir = config.load(sys.argv[1]), sys.argv[2], sys.argv[3]
tokenizer = load_tokenizer(tokenizer_dir)
prompts = generate.generation_prompts(measure.dataset_splits(p, None, tokenizer)["test"])
width = max(map(len, prompts))
ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(x)) + x for x in prompts]).cuda()
mask = (ids != tokenizer.pad_token_id).long()  # left padding only: the prompts hold no pad token
model = load_model(model_dir, torch.bfloat16).eval()


def run(label: str, attention: str, new: int = NEW_TOKENS, **cache) -> torch.Tensor:
    model.set_attn_implementation(attention)
    gen = GenerationConfig(
        max_new_tokens=new, do_sample=False, eos_token_id=[], pad_token_id=tokenizer.pad_token_id, **cache
    )
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    torch.cuda.synchronize()
    print(
        json.dumps({"variant": label, "new": new, "seconds": round(time.perf_counter() - t0, 2)}), flush=True
    )
    return out[:, width:]


grouped, static = generate.GENERATION_ATTENTION, {"cache_implementation": "static"}
run("eager dynamic, 1 token (prefill)", "eager", new=1)
run("grouped dynamic, 1 token (prefill)", grouped, new=1)
eager = run("eager dynamic", "eager")
answers = {
    "grouped dynamic": run("grouped dynamic", grouped),
    "grouped static": run("grouped static", grouped, **static, disable_compile=True),
    "grouped static compiled (first)": run("grouped static compiled (first)", grouped, **static),
}
answers["grouped static compiled (second)"] = run("grouped static compiled (second)", grouped, **static)
# bf16 rounding differs with the kernels: the share of answer tokens equal to eager's
print(json.dumps({k: round(float((v == eager).float().mean()), 4) for k, v in answers.items()}))
