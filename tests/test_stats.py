import numpy as np
import pytest
import sacrebleu

from ftbench.evaluation import stats


def scores(hyps, refs, rouge):
    return {
        "bleu4": np.array([stats.bleu_stats(h, r) for h, r in zip(hyps, refs, strict=True)], dtype=float),
        "rougeL": np.array(rouge, dtype=float),
    }


HYPS = [f"the answer number {i} is {i * 3} today" for i in range(30)]
REFS = [f"the answer number {i} is {i * 3}" if i % 2 else f"answer {i} is {i * 3} now" for i in range(30)]
# not one 4-gram in common: the score then rests on sacrebleu's default (exp) smoothing
NO_4GRAM_HYPS = [f"number {i} is here" for i in range(30)]
NO_4GRAM_REFS = [f"the number {i} is {i}" for i in range(30)]


@pytest.mark.parametrize(("hyps", "refs"), [(HYPS, REFS), (NO_4GRAM_HYPS, NO_4GRAM_REFS)])
def test_bleu_from_summed_statistics_is_sacrebleus_corpus_bleu(hyps, refs):
    s = scores(hyps, refs, [0] * 30)
    assert stats.corpus_bleu(s["bleu4"]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_bootstrap_is_seeded_and_covers_the_point_estimate():
    s = scores(HYPS, REFS, np.linspace(10, 90, 30))
    a = stats.confidence(s, "rougeL", stats.resample_indices(30, 500, seed=0))
    assert a == stats.confidence(s, "rougeL", stats.resample_indices(30, 500, seed=0))
    assert a[0] < 50 < a[1]
    # a 95% interval of a mean: about +-1.96 standard errors (500 resamples: within 15%)
    values = s["rougeL"]
    assert a[1] - a[0] == pytest.approx(2 * 1.96 * values.std(ddof=1) / np.sqrt(len(values)), rel=0.15)


def test_identical_models_do_not_differ_and_a_better_one_does():
    same = scores(HYPS, REFS, np.linspace(10, 90, 30))
    idx = stats.resample_indices(30, 500, seed=0)
    d = stats.compare(same, same, "bleu4", idx)
    assert (d["diff"], d["lo"], d["hi"], d["p"]) == (0, 0, 0, 1)
    better = scores(REFS, REFS, np.linspace(10, 90, 30) + 5)
    d = stats.compare(better, same, "rougeL", idx)
    assert d["diff"] == pytest.approx(5) and d["lo"] > 0 and d["p"] < 0.01
    d = stats.compare(better, same, "bleu4", idx)
    assert d["diff"] > 0 and d["p"] < 0.01


def test_p_value_is_two_sided():
    # 2 of 10 resampled differences at or below zero: one-sided 0.2, two-sided 0.4
    assert stats.p_value(np.arange(-1.0, 9.0)) == pytest.approx(0.4)
    assert stats.p_value(-np.arange(-1.0, 9.0)) == pytest.approx(0.4)


def test_expectation_verdicts():
    idx = stats.resample_indices(30, 500, seed=0)
    base = np.linspace(10, 90, 30)
    q, g = scores(HYPS, REFS, base), scores(HYPS, REFS, base + 10)
    clear = stats.expectation(scores(HYPS, REFS, base + 20), q, g, "rougeL", idx)
    # the bar is qlora + 0.7 * (galore - qlora) = base + 7
    assert clear["verdict"] == "yes" and clear["margin"] == pytest.approx(13)
    assert stats.expectation(scores(HYPS, REFS, base), q, g, "rougeL", idx)["verdict"] == "no"
    noisy = scores(HYPS, REFS, base + 7 + np.random.default_rng(0).normal(0, 30, 30))
    assert stats.expectation(noisy, q, g, "rougeL", idx)["verdict"] == "inconclusive"


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("so she has 1000 + 0 = 1000 left.\n#### 1,000", "#### 1000", 100),  # commas
        ("#### 18.0", "She earns 9 * 2 = 18 dollars.\n#### 18", 100),  # compared as numbers
        ("#### $18.", "#### 18", 100),  # `$` and a trailing `.`
        ("#### 17", "#### 18", 0),
        ("the answer is 18", "#### 18", 0),  # no final answer: wrong
        ("#### ", "#### 18", 0),  # nothing after `####`: wrong
        ("#### -3", "#### -3", 100),  # the sign is kept ...
        ("#### 3", "#### -3", 0),  # ... and counts
        ("#### 5 was my guess\n#### 18", "#### 18", 100),  # the last `####` wins
        ("#### 18\n#### 5", "#### 18", 0),
        ("#### Paris", "#### Paris", 100),  # not a number: compared as text
        ("#### paris", "#### Paris", 0),
    ],
)
def test_exact_match_of_the_final_answer(prediction, reference, expected):
    assert stats.exact_match(prediction, reference) == expected


def test_final_answer_is_normalised_and_none_without_one():
    assert stats.final_answer("steps\n####  $1,000. \nmore text") == "1000"
    assert stats.final_answer("no answer mark") is None and stats.final_answer("ends in ####") is None


def test_exact_match_applies_only_where_every_reference_has_a_final_answer():
    assert stats.has_final_answers(["a\n#### 1", "b\n#### 2,000"])
    assert not stats.has_final_answers(["a\n#### 1", "Paris is the capital."])  # one without: none
    assert not stats.has_final_answers(["The capital of France is Paris."])  # builtin-style
    assert not stats.has_final_answers([])
