"""Evaluate stage: greedy answers on each test split, scored with BLEU-4 (sacrebleu) and ROUGE
(rouge-score), and with exact match of the final `#### <answer>` where every reference of the split ends
in one (GSM8K; stats.has_final_answers)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from rouge_score import rouge_scorer
from transformers import AttentionInterface, GenerationConfig
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ftbench import chat, commands, config, distributed, paths, recipes, resources, stats, tracking
from ftbench.atomic import read_jsonl, write_json, write_jsonl
from ftbench.errors import UserError, stage_main
from ftbench.loading import compute_dtype, configure_attention, device, load_model, load_tokenizer
from ftbench.loss import CONTINUITY_RTOL, continuity, mean_loss
from ftbench.progress import LOG, bar

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
METRICS = ("bleu4", *ROUGE_KEYS)
EXACT_MATCH = stats.EXACT_MATCH
CONVENTION = (
    "BLEU-4: sacrebleu corpus BLEU ({signature}); ROUGE-1/2/L: rouge-score F1, mean over examples, "
    "stemming {stemming}; greedy decoding, at most {max_new_tokens} new tokens, answers cut at end of turn; "
    "all x100."
)
EXACT_MATCH_CONVENTION = (
    " Exact match (test splits whose every reference ends in `#### <answer>`): the answer after the last "
    "`####`, commas, `$` and a trailing `.` removed, compared as a number (18 = 18.0), else as text; "
    "an answer without `####` is wrong; x100."
)
# The continuity check (evaluate.qlora_form: merged) compares the merged copy's teacher-forced loss with
# NF4 + adapter's on the first CONTINUITY_ROWS test rows: 32 rows are hundreds to thousands of answer
# tokens, over which per-token rounding differences average out, for 32 rows' forward passes per form,
# little next to generating the answers (max_new_tokens passes per batch).
CONTINUITY_ROWS = 32
# The left-padding check (evaluate.generate): the most padded prompt of each batch, padded as in the batch
# and alone, must get the same next-token log-probabilities within this many nats (the largest gap over
# the vocabulary). Measured on the H200 (torch 2.11, transformers 5.17, Gemma 3 270M, bf16, 36 pads before
# a 29-token prompt): eager attention 0.50; sdpa 54, and 8.1 with fully masked rows unmasked
# (transformers#47651), which corrupted the first answer token of a whole batch.
PADDING_TOLERANCE = 1.0
# Generation's attention: eager's arithmetic (additive mask, fp32 softmax), which passes the check above,
# without eager's copies of the KV cache (grouped_eager_attention).
GENERATION_ATTENTION = "ftbench_grouped_eager"


def load_for_eval(name: str, run: config.Run, p: config.Params):
    """The base model, or a method's model as its recipe scores it (e.g. an adapter on its base)."""
    if name == "base":
        return load_model(paths.BASE, compute_dtype())
    return recipes.get(p.methods[name].recipe).load_trained(paths.BASE, paths.run_dir(name, run))


def scored_form(name: str, p: config.Params) -> str | None:
    """The form a method's model is scored in, for metrics/eval (Recipe.scored_form: `nf4+adapter`,
    `merged-<dtype it generated in>`); None for the base and models scored as saved."""
    return None if name == "base" else recipes.get(p.methods[name].recipe).scored_form(p)


def merges_nf4(name: str, p: config.Params) -> bool:
    """Whether evaluation merges the adapter into the dequantized NF4 weights (evaluate.qlora_form)."""
    return (
        name != "base"
        and recipes.get(p.methods[name].recipe).nf4_adapter
        and p.evaluate.qlora_form == "merged"
    )


def merged_for_eval(trained, recipe, adapter, rows: list[dict], p: config.Params, label: str):
    """The adapter merged into the exact dequantized NF4 weights it was trained on (the QLoRA recipe's
    merge, in fp32), cast to the compute dtype, and the continuity check that it scores as NF4 + adapter
    does."""
    # merged before the NF4 model runs: on some CPUs bitsandbytes repacks its weights then (qlora.nf4_weight)
    merged, _ = recipe.merged_model(paths.BASE, adapter, "nf4", trained=trained)
    merged = merged.to(compute_dtype())
    check = rows[:CONTINUITY_ROWS]
    adapter_loss = mean_loss(trained, check, p.train.fused_cross_entropy)
    merged_loss = mean_loss(merged, check, p.train.fused_cross_entropy)
    check_facts = continuity(
        adapter_loss,
        merged_loss,
        CONTINUITY_RTOL,
        where=f"evaluate {label}, the adapter merged into the NF4 weights, first {len(check)} test rows",
        trained_form="NF4 + adapter",
        fix="set `evaluate.qlora_form: adapter` to score NF4 + adapter",
        trained_key="nf4_adapter_loss",
    )
    return merged, {"rows": len(check), **check_facts}


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], p: config.Params) -> list[str]:
    """Greedy answers, batched by similar prompt length, left-padded, cut at the end of the turn. `model`
    is a transformers model or anything with its eval() and generate() (an ensemble.Lockstep)."""
    stops = [chat.end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    gen = GenerationConfig(
        max_new_tokens=p.evaluate.max_new_tokens,
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    for member in transformers_models(model):
        # eager's arithmetic: with left padding, sdpa's answers were corrupted on the H200 (PADDING_TOLERANCE)
        member.set_attn_implementation(GENERATION_ATTENTION)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    order = order[distributed.rank() :: distributed.world_size()]  # this rank's share, lengths alike
    answers: dict[int, str] = {}
    bs = p.evaluate.batch_size
    with bar("generate", len(order), unit=" answers") as answers_bar:
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            ids, mask = ids.to(device()), mask.to(device())
            shortest = min(range(len(idx)), key=lambda row: len(prompts[idx[row]]))  # the most padded
            check_left_padding(model, ids[shortest], mask[shortest], prompts[idx[shortest]])
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
            for row, i in enumerate(idx):
                answers[i] = answer_text(tokenizer, out[row, width:].tolist(), stops)
            answers_bar.update(len(idx))
    merged = {i: a for share in distributed.gather(answers) for i, a in share.items()}
    return [merged[i] for i in range(len(prompts))]


def grouped_eager_attention(module, query, key, value, attention_mask, scaling=None, softcap=None, **kwargs):
    """transformers' eager attention (Gemma 3's eager_attention_forward) in eval mode, without `repeat_kv`.

    Gemma 3 has one key/value head per 4 query heads, and eager copies the keys and values once per query
    head, at every layer and generated token: at 1,024 answers a batch that copy of the KV cache was half
    of a decoding step on the H200. Here each group's query heads are stacked along the query axis and
    read their one key/value head in place: the same products, mask and fp32 softmax. On the H200 (1B
    shape, 1,024 GSM8K prompts, 64 new tokens): 5.37 s -> 3.09 s. No dropout: generation runs in eval
    mode."""
    if scaling is None:
        scaling = module.head_dim**-0.5
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    weights = torch.matmul(query.reshape(batch, kv_heads, group * q_len, dim), key.transpose(2, 3)) * scaling
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        kv_len = weights.shape[-1]
        weights = weights.view(batch, kv_heads, group, q_len, kv_len) + attention_mask[:, :, None, :, :kv_len]
        weights = weights.view(batch, kv_heads, group * q_len, kv_len)
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


# registered on import: generate switches models to it by name
AttentionInterface.register(GENERATION_ATTENTION, grouped_eager_attention)
AttentionMaskInterface.register(GENERATION_ATTENTION, eager_mask)


def transformers_models(model) -> list:
    """The transformers models that generate: an ensemble's members (ensemble.Lockstep, read by its
    attribute so that evaluating a single model does not import the ensemble), else the model itself."""
    return getattr(model, "members", [model])


@torch.no_grad()
def check_left_padding(model, ids: torch.Tensor, mask: torch.Tensor, prompt: list[int]) -> None:
    """Stop if a left-padded prompt's next-token log-probabilities differ from the same prompt's alone
    (PADDING_TOLERANCE): every answer of a batch would then start from a corrupted first token."""
    if mask.all():
        return  # no padding, nothing to compare
    for member in transformers_models(model):
        padded = member(input_ids=ids[None], attention_mask=mask[None]).logits[0, -1]
        alone = member(input_ids=torch.tensor([prompt], device=ids.device)).logits[0, -1]
        gap = (padded.float().log_softmax(-1) - alone.float().log_softmax(-1)).abs().max().item()
        if not gap <= PADDING_TOLERANCE:  # NaN fails too
            raise UserError(
                f"batched generation is corrupted on this stack: a left-padded prompt's next-token "
                f"log-probabilities are {gap:.3g} nats from the same prompt's alone (tolerance "
                f"{PADDING_TOLERANCE}); set evaluate.batch_size: 1, or use other torch/transformers versions"
            )


def answer_text(tokenizer, ids: list[int], stops: list[int]) -> str:
    """The generated ids up to the first stop token, as text. The cut is made here rather than left to
    `skip_special_tokens`: the Gemma 3 tokenizer read from the GGUF does not mark <end_of_turn> special
    under transformers 5.17, and on the H200 it was decoded into the answers as text."""
    end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True).strip()


def generation_prompts(rows: list[dict]) -> list[list[int]]:
    """Each test row's prompt cut from the ids the data stage wrote (chat.prompt_ids), so that generation,
    the test loss and training all see the same tokens, chat markup in the data included."""
    return [r["input_ids"][: r["prompt_len"]] for r in rows]


def rouge(p: config.Params) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=p.evaluate.rouge_stemmer)


def example_scores(prediction: str, reference: str, scorer, graded: bool = False) -> dict:
    """Per-example scores: BLEU sufficient statistics (corpus BLEU sums them) and ROUGE F1 x100; with
    `graded` (the split has final answers), exact match 100 or 0 too."""
    rouge = scorer.score(reference, prediction)
    scores = {
        "bleu_stats": stats.bleu_stats(prediction, reference),
        **{k: 100 * rouge[k].fmeasure for k in ROUGE_KEYS},
    }
    if graded:
        scores[EXACT_MATCH] = stats.exact_match(prediction, reference)
    return scores


def llamafactory_scores(prediction: str, reference: str) -> dict:
    """LLaMA-Factory's metrics: character-level sentence BLEU-4 (NLTK, smoothing method 3) and ROUGE
    F1 on jieba words (rouge-chinese), x100, to be averaged over examples."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)
    hyp, ref = " ".join(jieba.cut(prediction)), " ".join(jieba.cut(reference))
    if not hyp.split() or not ref.split():
        rouge = {k: 0.0 for k in ROUGE_KEYS}
    else:
        got = Rouge().get_scores(hyp, ref)[0]
        rouge = {"rouge1": got["rouge-1"]["f"], "rouge2": got["rouge-2"]["f"], "rougeL": got["rouge-l"]["f"]}
    return {"bleu4": 100 * bleu, **{k: 100 * v for k, v in rouge.items()}}


def aggregate(rows: list[dict]) -> dict:
    """The reported numbers, recomputed from per-example rows (as the tests and the report do)."""
    result = {"bleu4": stats.corpus_bleu(np.array([r["bleu_stats"] for r in rows]))}
    result.update({k: float(np.mean([r[k] for r in rows])) for k in ROUGE_KEYS})
    if EXACT_MATCH in rows[0]:
        result[EXACT_MATCH] = float(np.mean([r[EXACT_MATCH] for r in rows]))
    if "llamafactory" in rows[0]:
        result["llamafactory"] = {k: float(np.mean([r["llamafactory"][k] for r in rows])) for k in METRICS}
    return result


def model_for_eval(name: str, run: config.Run, p: config.Params, rows: list[dict], record: resources.Record):
    """The model `name` is scored as on `run` (evaluate.qlora_form), and what loading it checked."""
    with record.phase("load"):
        model = load_for_eval(name, run, p)
    facts = {}
    if merges_nf4(name, p):
        with record.phase("merge"):
            recipe = recipes.get(p.methods[name].recipe)
            model, facts["continuity"] = merged_for_eval(
                model, recipe, paths.run_dir(name, run), rows, p, f"{name}/{run.key}"
            )
    return model, facts


def evaluate_run(name: str, run: config.Run, p: config.Params, tokenizer, record: resources.Record) -> dict:
    LOG.info(f"evaluate {name} on {run.key}")
    rows = read_jsonl(paths.split_file(run.dataset, "test"))
    model, facts = model_for_eval(name, run, p, rows, record)
    with record.phase("generate"):
        predictions = generate(model, tokenizer, generation_prompts(rows), p)
    with record.phase("test_loss"):
        loss = mean_loss(model, rows, p.train.fused_cross_entropy)
    return scored_run(
        name, run, rows, predictions, p, record, {"loss": loss, "perplexity": math.exp(loss), **facts}
    )


def scored_run(
    name: str,
    run: config.Run,
    rows: list[dict],
    predictions: list[str],
    p: config.Params,
    record,
    facts: dict,
) -> dict:
    """Scores each answer against its reference, writes them to metrics/predictions; the run's numbers
    (with `facts` added). Other ranks return {}: rank 0 holds every answer."""
    if not distributed.is_main():
        return {}
    with record.phase("score"), bar("score", len(rows), unit=" answers") as score_bar:
        scorer = rouge(p)
        graded = stats.has_final_answers([r["answer"] for r in rows])
        scored = []
        for r, pred in zip(rows, predictions, strict=True):
            row = {
                "prompt": r["messages"][-1]["content"],
                "reference": r["answer"],
                "prediction": pred,
                **example_scores(pred, r["answer"], scorer, graded),
            }
            if p.evaluate.llamafactory:
                row["llamafactory"] = llamafactory_scores(pred, r["answer"])
            scored.append(row)
            score_bar.update()
    write_jsonl(paths.predictions_file(name, run), scored)
    return {**aggregate(scored), "n": len(rows), **facts}


def run(name: str, p: config.Params, st: tracking.StageRun) -> dict:
    tokenizer = load_tokenizer(paths.BASE)
    runs = {r.key: evaluate_run(name, r, p, tokenizer, st.record) for r in p.runs(name)}
    form = scored_form(name, p)
    return summarize(name, p, runs, {"scored_form": form} if form else {})


def summarize(name: str, p: config.Params, runs: dict, details: dict) -> dict:
    """metrics/eval/<name>.json: the means over the runs, the scoring convention, `details` and each run."""
    if not distributed.is_main():
        return {}
    summary = means(runs)
    summary["convention"] = CONVENTION.format(
        signature=stats.bleu_signature(),
        stemming="on" if p.evaluate.rouge_stemmer else "off",
        max_new_tokens=p.evaluate.max_new_tokens,
    )
    if EXACT_MATCH in summary:
        summary["convention"] += EXACT_MATCH_CONVENTION
    summary.update(details)
    summary["runs"] = runs
    write_json(paths.EVAL / f"{name}.json", summary)
    LOG.info(f"evaluate {name}: BLEU-4 {summary['bleu4']:.2f}  ROUGE-L {summary['rougeL']:.2f}")
    return summary


def means(runs: dict) -> dict[str, float]:
    """The summary's numbers: each logged metric's mean over the runs."""
    return {k: mean_over(runs, k) for k in logged(runs)}


def logged(runs: dict) -> tuple[str, ...]:
    """The summary's metrics: exact match only where some dataset has final answers; the test loss where
    the runs have one (an ensemble's runs have none: ftbench.ensemble)."""
    graded = any(EXACT_MATCH in r for r in runs.values())
    losses = ("loss", "perplexity") if any("loss" in r for r in runs.values()) else ()
    return (*METRICS, *((EXACT_MATCH,) if graded else ()), *losses)


def mean_over(runs: dict, key: str) -> float:
    """A metric's mean over the runs that carry it (exact match: the datasets with final answers)."""
    return round(float(np.mean([r[key] for r in runs.values() if key in r])), 4)


def evaluation_stage(
    command: str, score: Callable[[str, config.Params, tracking.StageRun], dict], argv
) -> None:
    """The stage `python -m ftbench.<command> <name>` (evaluate, ensemble): `score` writes
    metrics/eval/<name>.json and metrics/predictions/<name>, measured as the stage evaluate-<name>."""
    p, name = commands.parse(command, argv)
    distributed.launch_or_init(p, command, argv)
    resources.cap_gpu_memory(p.resources.max_gpu_memory_gib)
    configure_attention()
    with tracking.stage(f"evaluate-{name}", p, method=name) as st:
        summary = score(name, p, st)
        if not distributed.is_main():
            return
        st.log_step(0, {k: summary[k] for k in logged(summary["runs"])})
        st.artifacts += [paths.EVAL / f"{name}.json", paths.PREDICTIONS / name]


@stage_main
def main(argv: list[str]) -> None:
    evaluation_stage("evaluate", run, argv)
