import json
import shutil

import pytest

from ftbench import config, data, evaluate, paths


def test_perfect_predictions_score_100():
    refs = ["The capital of France is Paris.", "Seven plus five equals twelve."]
    result = evaluate.score(refs, refs, stemmer=True)
    assert result["bleu4"] == pytest.approx(100) and result["rougeL"] == pytest.approx(100)
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")


def test_scores_match_hand_computed_values():
    # ROUGE-1 F1: "the cat sat" vs "the cat sat down": P = 3/3, R = 3/4, F = 2PR/(P+R) = 6/7.
    # ROUGE-2 F1: bigrams 2/2 and 2/3 -> 0.8. ROUGE-L F1: LCS 3 -> 6/7.
    r = evaluate.score(["the cat sat"], ["the cat sat down"], stemmer=False)
    assert r["rouge1"] == pytest.approx(100 * 6 / 7, abs=1e-3)
    assert r["rouge2"] == pytest.approx(80, abs=1e-3)
    assert r["rougeL"] == pytest.approx(100 * 6 / 7, abs=1e-3)
    # sacrebleu corpus BLEU is 0 when the hypothesis has no 4-gram at all (no effective-order fallback)
    assert r["bleu4"] == 0


def test_bleu4_matches_a_hand_computation():
    # "the cat sat on the mat" vs "the cat sat on the red mat": n-gram precisions 6/6, 4/5, 3/4, 2/3,
    # brevity penalty exp(1 - 7/6); BLEU = BP * geometric mean of the precisions.
    import math

    r = evaluate.score(["the cat sat on the mat"], ["the cat sat on the red mat"], stemmer=False)
    by_hand = 100 * math.exp(1 - 7 / 6) * (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    assert r["bleu4"] == pytest.approx(by_hand, abs=1e-3)


def test_stemming_is_a_param():
    assert (
        evaluate.score(["cats running"], ["cat runs"], stemmer=True)["rouge1"]
        > evaluate.score(["cats running"], ["cat runs"], stemmer=False)["rouge1"]
    )


def test_evaluate_base_writes_predictions_and_scores(project, tiny_model_dir):
    shutil.copytree(tiny_model_dir, paths.BASE)
    data.run(config.load())
    summary = evaluate.run("base", config.load())
    preds = [
        json.loads(line) for line in (paths.PREDICTIONS / "base" / "builtin.jsonl").read_text().splitlines()
    ]
    assert len(preds) == 8 and set(preds[0]) == {"prompt", "reference", "prediction"}
    saved = json.loads((paths.EVAL / "base.json").read_text())
    assert saved == summary and {"bleu4", "rouge1", "rouge2", "rougeL"} <= set(saved)
    # recomputing from the saved predictions gives the reported numbers
    again = evaluate.score([p["prediction"] for p in preds], [p["reference"] for p in preds], stemmer=True)
    assert again["bleu4"] == saved["bleu4"] and again["rougeL"] == saved["rougeL"]
