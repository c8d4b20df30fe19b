import json
import math
import shutil

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer

from ftbench import chat
from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.common.errors import UserError
from ftbench.evaluation import generate, stats
from ftbench.evaluation import score as scoring
from ftbench.loading import load_model, load_tokenizer
from ftbench.stages import data, evaluate


def score(predictions: list[str], references: list[str], stemmer: bool = False, graded: bool = False) -> dict:
    scorer = rouge_scorer.RougeScorer(list(scoring.ROUGE_KEYS), use_stemmer=stemmer)
    return scoring.aggregate(
        [scoring.example_scores(p, r, scorer, graded) for p, r in zip(predictions, references, strict=True)]
    )


def test_perfect_predictions_score_100():
    refs = ["The capital of France is Paris.", "Seven plus five equals twelve."]
    result = score(refs, refs)
    assert result["bleu4"] == pytest.approx(100) and result["rougeL"] == pytest.approx(100)


def test_rouge_matches_hand_computed_values():
    # "the cat sat" vs "the cat sat down": ROUGE-1 P = 3/3, R = 3/4, F1 = 6/7; ROUGE-2 2/2 and 2/3 -> 0.8;
    # ROUGE-L: LCS 3 -> 6/7.
    r = score(["the cat sat"], ["the cat sat down"])
    assert r["rouge1"] == pytest.approx(100 * 6 / 7) and r["rougeL"] == pytest.approx(100 * 6 / 7)
    assert r["rouge2"] == pytest.approx(80)
    # sacrebleu corpus BLEU is 0 when the hypothesis has no 4-gram at all (no effective-order fallback)
    assert r["bleu4"] == 0


def test_bleu4_matches_a_hand_computation_and_sacrebleu_corpus_score():
    # "the cat sat on the mat" vs "the cat sat on the red mat": n-gram precisions 6/6, 4/5, 3/4, 2/3,
    # brevity penalty exp(1 - 7/6); BLEU = BP * geometric mean of the precisions.
    r = score(["the cat sat on the mat"], ["the cat sat on the red mat"])
    assert r["bleu4"] == pytest.approx(100 * math.exp(1 - 7 / 6) * (4 / 5 * 3 / 4 * 2 / 3) ** 0.25)
    import sacrebleu

    hyps = ["A sheep bleats.", "The capital of Peru is Lima.", "Seven plus five equals twelve!"]
    refs = ["A sheep bleats loudly.", "Lima is the capital of Peru.", "7 plus 5 equals 12."]
    assert score(hyps, refs)["bleu4"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_exact_match_is_the_share_of_right_final_answers():
    refs = ["3 + 4 = 7\n#### 7", "10 - 12 = -2\n#### -2", "2 * 500 = 1000\n#### 1,000", "#### 5"]
    preds = ["#### 7.0", "it is -2", "#### 1000", "#### 6"]  # right, no final answer, right, wrong
    assert score(preds, refs, graded=True)["exact_match"] == pytest.approx(50)
    assert "exact_match" not in score(preds, refs)


def test_stemming_is_a_param(project, tiny_model_dir):
    from .conftest import write_params

    rouge1 = {}
    for stemming in (True, False):
        write_params(project, tiny_model_dir, **{"evaluate.rouge_stemmer": stemming})
        scorer = scoring.rouge(config.load())
        rouge1[stemming] = scoring.example_scores("cats running", "cat runs", scorer)["rouge1"]
    assert rouge1[True] > rouge1[False]


def test_llamafactory_convention_is_character_bleu_with_smoothing_3():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    # "A cat." shares no 4 characters in a row with "A cot.", so only the smoothing keeps BLEU above 0,
    # and method 3 gives 38.0 where method 1 gives 25.4 and none 0
    for prediction, reference in [("The cat sat.", "The cat sat down."), ("A cat.", "A cot.")]:
        got = scoring.llamafactory_scores(prediction, reference)
        expected = sentence_bleu(
            [list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3
        )
        assert got["bleu4"] == pytest.approx(100 * expected) and 0 < got["rougeL"] < 100
    assert scoring.llamafactory_scores("", "x")["rouge1"] == 0


def test_evaluate_base_writes_predictions_that_recompute_to_the_scores(project, tiny_model_dir, st):
    from .conftest import write_params

    shutil.copytree(tiny_model_dir, paths.BASE)
    write_params(project, tiny_model_dir, **{"evaluate.llamafactory": True})
    data.run(config.load())
    summary = evaluate.run("base", config.load(), st)
    preds = [
        json.loads(line) for line in (paths.PREDICTIONS / "base" / "builtin.jsonl").read_text().splitlines()
    ]
    assert len(preds) == 8 and {"prompt", "reference", "prediction", "bleu_stats", "rougeL"} <= set(preds[0])
    saved = json.loads((paths.EVAL / "base.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert {"bleu4", "rouge1", "rouge2", "rougeL", "loss", "perplexity", "convention"} <= set(saved)
    # the builtin answers have no `#### <answer>`: no exact match anywhere, not even zeros
    assert "exact_match" not in saved and "exact_match" not in saved["runs"]["builtin"]
    assert not any("exact_match" in p for p in preds) and "Exact match" not in saved["convention"]
    assert "tok:13a" in saved["convention"] and "stemming on" in saved["convention"]
    # recomputing from the saved predictions gives the reported numbers
    again = score([p["prediction"] for p in preds], [p["reference"] for p in preds], stemmer=True)
    run = saved["runs"]["builtin"]
    assert again["bleu4"] == pytest.approx(run["bleu4"]) and again["rougeL"] == pytest.approx(run["rougeL"])
    assert run["perplexity"] == pytest.approx(math.exp(run["loss"]))
    # a random model scores 0 on word BLEU and ROUGE, so the recomputation is checked where it is not 0:
    # LLaMA-Factory's smoothed character BLEU
    char_bleu = np.mean(
        [scoring.llamafactory_scores(p["prediction"], p["reference"])["bleu4"] for p in preds]
    )
    assert char_bleu > 0 and run["llamafactory"]["bleu4"] == pytest.approx(char_bleu)


def test_evaluate_scores_exact_match_on_data_with_final_answers(project, tiny_model_dir, st):
    from .conftest import write_params
    from .test_data import alpaca

    shutil.copytree(tiny_model_dir, paths.BASE)
    rows = [{**r, "output": f"{r['output']}\n#### {i:,}"} for i, r in enumerate(alpaca(28))]
    (project / "gsm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_params(
        project, tiny_model_dir, **{"data.datasets": {"gsm": {"source": str(project / "gsm.jsonl")}}}
    )
    data.run(config.load())
    summary = evaluate.run("base", config.load(), st)
    preds = read_jsonl(paths.PREDICTIONS / "base" / "gsm.jsonl")
    assert all(p["exact_match"] == stats.exact_match(p["prediction"], p["reference"]) for p in preds)
    run = json.loads((paths.EVAL / "base.json").read_text())["runs"]["gsm"]
    assert run["exact_match"] == pytest.approx(np.mean([p["exact_match"] for p in preds]))
    assert summary["exact_match"] == pytest.approx(run["exact_match"], abs=1e-4)
    assert "Exact match (test splits whose every reference ends in `#### <answer>`)" in summary["convention"]


def test_generation_prompts_are_the_training_prompts(project, tiny_model_dir):
    """Markup in the data must read the same in generation as in training and in the test loss."""
    from .conftest import write_params
    from .test_data import with_chat_markup

    shutil.copytree(tiny_model_dir, paths.BASE)
    path = project / "marked.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in with_chat_markup(28)))
    write_params(project, tiny_model_dir, **{"data.datasets": {"d": {"source": str(path)}}})
    data.run(config.load())
    rows, tokenizer = read_jsonl(paths.split_file("d", "test")), load_tokenizer(paths.BASE)
    prompts = generate.generation_prompts(rows)
    assert prompts == [chat.prompt_ids(tokenizer, r["messages"]) for r in rows]
    assert all(r["input_ids"][: len(p)] == p for r, p in zip(rows, prompts, strict=True))  # the test loss's


def test_an_answer_ends_at_its_first_stop_token_whatever_the_tokenizer_calls_special(tiny_model_dir):
    """A stop token is cut off by id: under transformers 5.17 the GGUF's <end_of_turn> is not a special
    token, and skip_special_tokens left it (and anything after it) in the H200 study's answers."""
    tokenizer = load_tokenizer(tiny_model_dir)
    eot = chat.end_of_turn_id(tokenizer)
    stops = [eot, tokenizer.eos_token_id]
    answer, after = chat.text_ids(tokenizer, "#### 24"), chat.text_ids(tokenizer, " more")
    assert generate.answer_text(tokenizer, answer + [eot] + after, stops) == "#### 24"
    assert generate.answer_text(tokenizer, answer + [tokenizer.eos_token_id, eot], stops) == "#### 24"
    assert generate.answer_text(tokenizer, answer, stops) == "#### 24"  # the length cap: no stop token


def evaluate_qlora(project, tiny_model_dir, st, form: str) -> tuple[dict, dict]:
    """evaluate@qlora in the given evaluate.qlora_form: its builtin/seed0 run and metrics/eval/qlora.json."""
    from .conftest import write_params

    write_params(project, tiny_model_dir, **{"evaluate.qlora_form": form})
    summary = evaluate.run("qlora", config.load(), st)
    return summary["runs"]["builtin/seed0"], json.loads((paths.EVAL / "qlora.json").read_text())


def test_merged_and_adapter_forms_score_the_same_test_loss_and_say_which_was_scored(
    adapter, project, tiny_model_dir, st
):
    merged, saved = evaluate_qlora(project, tiny_model_dir, st, "merged")
    assert saved["scored_form"] == "merged-float32"  # the CPU's compute dtype
    check = saved["runs"]["builtin/seed0"]["continuity"]
    assert check["rows"] == 8 and check["tolerance"] == evaluate.CONTINUITY_RTOL  # the whole tiny test split
    assert check["merged_loss"] == pytest.approx(check["nf4_adapter_loss"], rel=1e-4)
    with_adapter, saved = evaluate_qlora(project, tiny_model_dir, st, "adapter")
    assert saved["scored_form"] == "nf4+adapter" and "continuity" not in saved["runs"]["builtin/seed0"]
    # the merge is onto the exact NF4 weights, so in fp32 the two forms are one model: a merge onto the
    # unquantized weights would be 2e-4 off on this model
    assert merged["loss"] == pytest.approx(with_adapter["loss"], rel=1e-4)
    assert check["nf4_adapter_loss"] == pytest.approx(with_adapter["loss"], rel=1e-6)  # same rows, same model


def test_a_merge_that_is_not_the_trained_model_stops_with_one_line(
    adapter, project, tiny_model_dir, st, monkeypatch
):
    from ftbench.common.errors import UserError
    from ftbench.recipes import qlora

    with_adapter, _ = evaluate_qlora(project, tiny_model_dir, st, "adapter")
    delta = qlora.lora_delta
    monkeypatch.setattr(qlora, "lora_delta", lambda layer, name="default": 2 * delta(layer, name))
    # a random model's loss sits near ln(vocabulary) whatever its weights (a doubled adapter moves it by
    # 7e-4), so the tolerance is brought down to what fp32 holds (1e-5 measured) for the check to see it
    monkeypatch.setattr(evaluate, "CONTINUITY_RTOL", 1e-4)
    (paths.EVAL / "qlora.json").unlink()
    with pytest.raises(UserError) as err:
        evaluate_qlora(project, tiny_model_dir, st, "merged")
    message = str(err.value)
    assert "\n" not in message and "set `evaluate.qlora_form: adapter`" in message
    assert f"NF4 + adapter's {with_adapter['loss']:.4f}" in message  # the 8 rows are the whole test split
    assert not (paths.EVAL / "qlora.json").exists()
    # with no check, the corrupted merge is what gets scored: the merged copy, not NF4 + adapter, is scored
    monkeypatch.setattr(evaluate, "CONTINUITY_RTOL", float("inf"))
    corrupted, _ = evaluate_qlora(project, tiny_model_dir, st, "merged")
    assert abs(corrupted["loss"] - with_adapter["loss"]) > 1e-4 * with_adapter["loss"]


def test_left_padded_generation_is_checked_against_the_prompt_alone(tiny_model_dir):
    """generate.generate compares each batch's most padded prompt with itself unpadded: the same prompt
    passes; a padded row whose log-probabilities are not those of the prompt (what the H200's corrupted
    prefill gave) stops the stage with one line."""
    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    # a random model's next-token distribution is near uniform: sharpened (the tied head x 20), two
    # prompts' differ by far more than the tolerance, while one prompt padded or not still agrees
    model.get_output_embeddings().weight.data.mul_(20)
    prompt, other = chat.text_ids(tokenizer, "How many legs has a cat?"), chat.text_ids(tokenizer, "Hi")
    ids = torch.tensor([tokenizer.pad_token_id] * 3 + prompt)
    mask = torch.tensor([0] * 3 + [1] * len(prompt))
    generate.check_left_padding(model, ids, mask, prompt)
    with pytest.raises(UserError, match="batched generation is corrupted"):
        generate.check_left_padding(model, ids, mask, other)


def test_generation_runs_in_eager_arithmetic_for_every_member(prepared):
    """On the H200 sdpa scored a left-padded prompt 8-54 nats from the same prompt alone and eager 0.5
    (generate.PADDING_TOLERANCE): generation switches the model, and each of an ensemble's members, to
    eager's arithmetic (generate.GENERATION_ATTENTION). The CPU gives all of them the same answers, so
    the switch itself is what is checked."""
    from ftbench.evaluation.lockstep import Lockstep

    tokenizer = load_tokenizer(paths.BASE)
    models = [load_model(paths.BASE), load_model(paths.BASE)]
    assert {m.config._attn_implementation for m in models} == {"sdpa"}
    prompts = generate.generation_prompts(read_jsonl(paths.split_file("builtin", "test")))[:3]
    generate.generate(Lockstep(models, [0.5, 0.5], "probability"), tokenizer, prompts, prepared)
    assert {m.config._attn_implementation for m in models} == {generate.GENERATION_ATTENTION}


@pytest.mark.parametrize("softcap", [None, 20.0])
@pytest.mark.parametrize("q_len", [1, 5])
def test_grouped_attention_is_eager_attention_without_the_copies(q_len, softcap):
    """Each group's query heads read their one key/value head in place: the same output as transformers'
    eager attention, which copies the keys and values per query head, with a left-padding mask."""
    from types import SimpleNamespace

    from transformers.models.gemma3.modeling_gemma3 import eager_attention_forward

    torch.manual_seed(0)
    batch, heads, kv_heads, kv_len, dim = 3, 4, 1, 7, 8
    module = SimpleNamespace(head_dim=dim, num_key_value_groups=heads // kv_heads, training=False)
    query = torch.randn(batch, heads, q_len, dim)
    key, value = torch.randn(batch, kv_heads, kv_len, dim), torch.randn(batch, kv_heads, kv_len, dim)
    mask = torch.zeros(batch, 1, q_len, kv_len)
    mask[0, :, :, :3] = torch.finfo(mask.dtype).min  # the first row left-padded by 3
    expected, _ = eager_attention_forward(module, query, key, value, mask, scaling=0.3, softcap=softcap)
    got, _ = generate.grouped_eager_attention(module, query, key, value, mask, scaling=0.3, softcap=softcap)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_grouped_attention_generates_eager_answers(tiny_model_dir):
    """A whole left-padded batch decodes to eager attention's tokens."""
    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    prompts = [chat.text_ids(tokenizer, q) for q in ("How many legs has a cat?", "Hi", "Name a colour.")]
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    answers = {}
    for attention in ("eager", generate.GENERATION_ATTENTION):
        if attention == "eager":
            model.set_attn_implementation(attention)
        else:
            generate.use_generation_attention(model)
        answers[attention] = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0
        )
    assert torch.equal(answers["eager"], answers[generate.GENERATION_ATTENTION])
