"""Uncertainty: paired bootstrap intervals and p-values over per-example scores.

Corpus BLEU is not a mean of sentence scores, so each example keeps its BLEU sufficient statistics
(n-gram matches and totals, lengths); a resample sums them and sacrebleu's own `compute_bleu` turns
the sums into a score, so every resampled BLEU follows the reported convention exactly.
"""

from __future__ import annotations

from collections.abc import Callable

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
