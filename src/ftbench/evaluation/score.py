"""Scoring: each answer against its reference (BLEU-4 sufficient statistics with sacrebleu, ROUGE F1 with
rouge-score, exact match of the final `#### <answer>` where every reference of a split ends in one, as
GSM8K's do: stats.has_final_answers), the run's numbers from them, and metrics/eval/<model>.json."""

from __future__ import annotations

import numpy as np
from rouge_score import rouge_scorer

from ftbench.common import config, distributed, paths
from ftbench.common.atomic import write_json, write_jsonl
from ftbench.common.progress import LOG, bar
from ftbench.evaluation import stats

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
    the runs have one (an ensemble's runs have none: ftbench.stages.ensemble)."""
    graded = any(EXACT_MATCH in r for r in runs.values())
    losses = ("loss", "perplexity") if any("loss" in r for r in runs.values()) else ()
    return (*METRICS, *((EXACT_MATCH,) if graded else ()), *losses)


def mean_over(runs: dict, key: str) -> float:
    """A metric's mean over the runs that carry it (exact match: the datasets with final answers)."""
    return round(float(np.mean([r[key] for r in runs.values() if key in r])), 4)
