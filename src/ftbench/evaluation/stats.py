"""Uncertainty: paired bootstrap intervals and p-values over per-example scores.

Corpus BLEU is not a mean of sentence scores, so each example keeps its BLEU sufficient statistics
(n-gram matches and totals, lengths); a resample sums them and sacrebleu's own `compute_bleu` turns
the sums into a score, so every resampled BLEU follows the reported convention exactly.
Exact match of GSM8K-style final answers (`#### 72`) is a per-example 100 or 0, so its interval is a
mean's, as ROUGE's is.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import numpy as np
from sacrebleu.metrics import BLEU

Scores = dict[str, np.ndarray]  # metric -> per-example values (BLEU: rows of sufficient statistics)
ALPHA = 0.05
# effective_order only changes a sentence's own score, not the statistics taken from it; it also
# silences sacrebleu's advice to use it for sentence-level BLEU
_SENTENCE_BLEU = BLEU(effective_order=True)


def bleu_stats(hypothesis: str, reference: str) -> list[int]:
    """[matches 1..4, totals 1..4, hypothesis length, reference length] of one example."""
    s = _SENTENCE_BLEU.sentence_score(hypothesis, [reference])
    return [*s.counts, *s.totals, s.sys_len, s.ref_len]


def corpus_bleu(stats: np.ndarray) -> float:
    """sacrebleu corpus BLEU-4 (exp smoothing) from summed sufficient statistics."""
    t = stats.sum(axis=0).astype(int).tolist()
    return BLEU.compute_bleu(t[0:4], t[4:8], t[8], t[9], smooth_method="exp").score


def bleu_signature() -> str:
    """sacrebleu's signature of the BLEU convention used (it needs one scoring to know nrefs)."""
    bleu = BLEU()
    bleu.corpus_score(["a"], [["a"]])
    return str(bleu.get_signature())


ANSWER_MARK = "####"
EXACT_MATCH = "exact_match"  # the metric's key, in metrics/eval, the predictions and metrics/report.json


def final_answer(text: str) -> str | None:
    """The answer after the last `####` in `text`, to the end of its line, normalised: commas and `$`
    removed, surrounding spaces and a trailing `.` stripped (`#### $1,000.` -> `1000`). None where
    there is no `####` or nothing after it."""
    if ANSWER_MARK not in text:
        return None
    line = text.rsplit(ANSWER_MARK, 1)[1].split("\n", 1)[0]
    answer = line.replace(",", "").replace("$", "").strip().removesuffix(".").strip()
    return answer or None


def same_answer(a: str, b: str) -> bool:
    """Equal as numbers where both are (`18` == `18.0`), else as strings."""
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return a == b


def exact_match(prediction: str, reference: str) -> float:
    """100 if the prediction's final answer is the reference's, else 0 (a prediction without one is
    wrong); x100 like the other metrics, so a mean is a percentage."""
    predicted, expected = final_answer(prediction), final_answer(reference)
    return 100.0 if None not in (predicted, expected) and same_answer(predicted, expected) else 0.0


def has_final_answers(references: list[str]) -> bool:
    """Exact match applies to a test split whose every reference carries a `#### <answer>` line
    (GSM8K); any other split gets no exact-match score at all (no column, no zeros)."""
    return bool(references) and all(final_answer(r) is not None for r in references)


def point(metric: str, values: np.ndarray) -> float:
    return corpus_bleu(values) if metric == "bleu4" else float(values.mean())


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap(stat: Callable[[np.ndarray], float], indices: np.ndarray) -> np.ndarray:
    """`stat(idx)` for every resample of example indices."""
    return np.array([stat(idx) for idx in indices])


def interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def p_value(diffs: np.ndarray) -> float:
    """Two-sided paired-bootstrap p-value for 'no difference': how often a resample crosses zero."""
    share = min((diffs <= 0).mean(), (diffs >= 0).mean())
    return float(min(1.0, 2 * share))


def confidence(scores: Scores, metric: str, indices: np.ndarray) -> tuple[float, float]:
    """95% interval of one model's metric."""
    return interval(bootstrap(lambda i: point(metric, scores[metric][i]), indices))


def compare(a: Scores, b: Scores, metric: str, indices: np.ndarray) -> dict:
    """a - b on the same resamples: difference, 95% interval and p-value."""
    diffs = bootstrap(lambda i: point(metric, a[metric][i]) - point(metric, b[metric][i]), indices)
    lo, hi = interval(diffs)
    return {
        "diff": point(metric, a[metric]) - point(metric, b[metric]),
        "lo": lo,
        "hi": hi,
        "p": p_value(diffs),
    }


def expectation(
    hybrid: Scores, qlora: Scores, galore: Scores, metric: str, indices: np.ndarray, weight: float = 0.7
) -> dict:
    """Is hybrid >= qlora + weight * (galore - qlora)? yes / no / inconclusive by the 95% interval."""

    def margin(i: np.ndarray | slice) -> float:
        h, q, g = (point(metric, s[metric][i]) for s in (hybrid, qlora, galore))
        return h - (q + weight * (g - q))

    lo, hi = interval(bootstrap(margin, indices))
    verdict = "yes" if lo > 0 else "no" if hi < 0 else "inconclusive"
    return {"margin": margin(slice(None)), "lo": lo, "hi": hi, "verdict": verdict}
