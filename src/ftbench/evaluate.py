"""Evaluate stage: greedy answers on each test split, scored with BLEU-4 (sacrebleu) and ROUGE (rouge-score).

usage: python -m ftbench.evaluate <base | method>
"""

from __future__ import annotations

import sacrebleu
import torch
from rouge_score import rouge_scorer
from transformers import GenerationConfig

from ftbench import chat, config, paths, qlora
from ftbench.atomic import read_jsonl, write_json, write_jsonl
from ftbench.errors import one_argument, stage_main
from ftbench.loading import compute_dtype, device, load_model, load_tokenizer
from ftbench.resources import measure

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def load_for_eval(name: str, dataset: str, p: config.Params):
    """The base model, a QLoRA adapter on the NF4 base, or a full model trained by GaLore."""
    if name == "base":
        return load_model(paths.BASE, compute_dtype())
    folder = paths.model_dir(name) / dataset
    if p.methods[name].recipe == "qlora":
        return qlora.load_trained(paths.BASE, folder)
    return load_model(folder, compute_dtype())


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], p: config.Params) -> list[str]:
    """Greedy answers, batched by similar prompt length, left-padded, cut at the end of the turn."""
    gen = GenerationConfig(
        max_new_tokens=p.evaluate.max_new_tokens,
        do_sample=False,
        eos_token_id=[chat.end_of_turn_id(tokenizer), tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    bs = p.evaluate.batch_size
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        out = model.generate(
            input_ids=ids.to(device()), attention_mask=mask.to(device()), generation_config=gen
        )
        for row, i in enumerate(idx):
            answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    return answers


def score(predictions: list[str], references: list[str], stemmer: bool) -> dict:
    """Corpus BLEU-4 (sacrebleu defaults: 13a tokenizer, exp smoothing) and mean ROUGE F1, both x100."""
    bleu = sacrebleu.metrics.BLEU()
    result = {"bleu4": round(bleu.corpus_score(predictions, [references]).score, 4)}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=stemmer)
    per_example = [scorer.score(ref, pred) for ref, pred in zip(references, predictions, strict=True)]
    for key in ROUGE_KEYS:
        result[key] = round(100 * sum(s[key].fmeasure for s in per_example) / len(per_example), 4)
    result["bleu_signature"] = str(bleu.get_signature())
    result["n"] = len(predictions)
    return result


def evaluate_dataset(name: str, dataset: str, p: config.Params, tokenizer) -> dict:
    rows = read_jsonl(paths.split_file(dataset, "test"))
    model = load_for_eval(name, dataset, p)
    predictions = generate(model, tokenizer, [r["input_ids"][: r["prompt_len"]] for r in rows], p)
    references = [r["answer"] for r in rows]
    write_jsonl(
        paths.PREDICTIONS / name / f"{dataset}.jsonl",
        (
            {"prompt": r["messages"][-1]["content"], "reference": ref, "prediction": pred}
            for r, ref, pred in zip(rows, references, predictions, strict=True)
        ),
    )
    return score(predictions, references, p.evaluate.rouge_stemmer)


def run(name: str, p: config.Params) -> dict:
    tokenizer = load_tokenizer(paths.BASE)
    per_dataset = {d: evaluate_dataset(name, d, p, tokenizer) for d in p.data.datasets}
    keys = ("bleu4", *ROUGE_KEYS)
    summary = {k: round(sum(r[k] for r in per_dataset.values()) / len(per_dataset), 4) for k in keys}
    summary["datasets"] = per_dataset
    write_json(paths.EVAL / f"{name}.json", summary)
    print(f"evaluate {name}: BLEU-4 {summary['bleu4']:.2f}  ROUGE-L {summary['rougeL']:.2f}")
    return summary


@stage_main
def main(argv: list[str]) -> None:
    p = config.load()
    name = one_argument(argv, ["base", *p.methods], "evaluate")
    with measure(f"evaluate-{name}"):
        run(name, p)


if __name__ == "__main__":
    main()
