"""The inference-time ensemble (the seed's alternative 1): its lockstep decoder against transformers'
generate, its stage, and its params."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from ftbench import chat
from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl
from ftbench.evaluation import generate
from ftbench.evaluation.lockstep import Lockstep
from ftbench.loading import load_model, load_tokenizer
from ftbench.stages import ensemble, evaluate

from .test_config import error_for

RUN = config.Run("builtin", 0)


def save_other_model(folder) -> None:
    """A second tiny Gemma 3, of other random weights, where a GaLore run of the builtin data lives."""
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(paths.BASE)).save_pretrained(folder)


@pytest.fixture
def members(prepared):
    """(base model, another model, tokenizer, the test prompts, params)."""
    save_other_model(paths.run_dir("galore", RUN))
    rows = read_jsonl(paths.split_file("builtin", "test"))
    return (
        load_model(paths.BASE),
        load_model(paths.run_dir("galore", RUN)),
        load_tokenizer(paths.BASE),
        generate.generation_prompts(rows),
        prepared,
    )


@pytest.mark.parametrize("average", ["probability", "log"])
def test_a_model_with_itself_answers_exactly_as_that_model_alone(members, average):
    model, _, tokenizer, prompts, p = members
    alone = generate.generate(model, tokenizer, prompts, p)  # transformers' generate
    assert len(set(alone)) > 1  # answers that tell a wrong decoder from the right one
    assert generate.generate(Lockstep([model, model], [0.5, 0.5], average), tokenizer, prompts, p) == alone


@pytest.mark.parametrize("chosen", [0, 1])
def test_a_member_of_weight_zero_changes_no_answer(members, chosen):
    first, second, tokenizer, prompts, p = members
    models = [first, second]
    alone = [generate.generate(m, tokenizer, prompts, p) for m in models]
    assert alone[0] != alone[1]  # the members answer differently
    weights = [1.0 if k == chosen else 0.0 for k in range(2)]
    together = generate.generate(Lockstep(models, weights, "probability"), tokenizer, prompts, p)
    assert together == alone[chosen]


def first_tokens(decoder, prompts: list[list[int]], tokenizer) -> list[int]:
    """The token the decoder picks first for each prompt, one prompt at a time (no padding)."""
    stops = [chat.end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    gen = GenerationConfig(max_new_tokens=1, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    out = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out.append(int(decoder.generate(ids, torch.ones_like(ids), gen)[0, -1]))
    return out


def averaged_argmax(logits: list[torch.Tensor], weights: list[float], scale) -> int:
    return int(sum(w * scale(x, -1) for w, x in zip(weights, logits, strict=True)).argmax())


def test_each_step_takes_the_argmax_of_the_weighted_average_of_probabilities_or_log_probabilities(members):
    first, second, tokenizer, prompts, _ = members
    weights = [0.7, 0.3]
    with torch.no_grad():
        logits = [[m(torch.tensor([q])).logits[0, -1].float() for m in (first, second)] for q in prompts]
    expected = {
        "probability": [averaged_argmax(ls, weights, torch.softmax) for ls in logits],
        "log": [averaged_argmax(ls, weights, torch.log_softmax) for ls in logits],
    }
    got = {a: first_tokens(Lockstep([first, second], weights, a), prompts, tokenizer) for a in expected}
    assert got == expected
    assert got["probability"] != got["log"]  # on these models the two averages disagree somewhere


@pytest.mark.parametrize(("form", "scored"), [("merged", "merged-float32"), ("adapter", "nf4+adapter")])
def test_the_stage_scores_the_members_of_each_run_together_as_evaluate_scores_one(
    adapter, members, project, tiny_model_dir, st, form, scored
):
    """qlora (in each evaluate.qlora_form) with weight 1 and galore with 0: evaluate@qlora's answers."""
    from .conftest import write_params

    ensembles = {"both": {"members": ["qlora", "galore"], "weights": [1, 0], "average": "probability"}}
    write_params(project, tiny_model_dir, ensembles=ensembles, **{"evaluate.qlora_form": form})
    p = config.load()
    summary = ensemble.run("both", p, st)
    qlora = evaluate.run("qlora", p, st)
    saved = json.loads((paths.EVAL / "both.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert (saved["members"], saved["weights"], saved["average"]) == (
        ["qlora", "galore"],
        [1, 0],
        "probability",
    )
    assert saved["member_forms"] == {"qlora": scored}  # galore's model is scored as saved
    run = saved["runs"]["builtin/seed0"]
    assert ("continuity" in run) == (form == "merged") and "loss" not in run and "loss" not in saved
    if form == "merged":
        assert set(run["continuity"]) == {"qlora"}
    answers = [r["prediction"] for r in read_jsonl(paths.predictions_file("both", RUN))]
    assert answers == [r["prediction"] for r in read_jsonl(paths.predictions_file("qlora", RUN))]
    assert run["rougeL"] == qlora["runs"]["builtin/seed0"]["rougeL"] and run["n"] == 8
    assert st.record["phases_s"].keys() >= {"load", "generate", "score"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"members": ["qlora", "nope"]}, "ensembles.e.members: 'nope' is not a method of `methods`"),
        ({"members": ["qlora", "galore", "hybrid"]}, "members: list exactly two methods, not 3"),
        ({"members": ["qlora", "galore"], "weights": [1]}, "weights: give one per member (2)"),
        ({"members": ["qlora", "galore"], "weights": [0, 0]}, "weights: at least one must be above 0"),
        (
            {"members": ["qlora", "galore"], "weights": [1, -1]},
            "ensembles.e.weights.1: Input should be greater",
        ),
        ({"members": ["qlora", "galore"], "average": "max"}, "ensembles.e.average: Input should be"),
    ],
)
def test_a_wrong_ensemble_is_one_line_naming_it(tmp_path, entry, expected):
    message = error_for(tmp_path, lambda p: p.update(ensembles={"e": entry}))
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(("name", "expected"), [("qlora", "a method has that name"), ("base", "not base")])
def test_an_ensemble_takes_no_name_of_a_method_or_of_base(tmp_path, name, expected):
    message = error_for(tmp_path, lambda p: p.update(ensembles={name: {"members": ["qlora", "galore"]}}))
    assert expected in message and "\n" not in message


def test_equal_weights_by_default_and_only_their_ratio_counts():
    entry = config.EnsembleParams(members=["qlora", "galore"])
    assert entry.normalized_weights() == [0.5, 0.5]
    assert config.EnsembleParams(members=["a", "b"], weights=[3.0, 1.0]).normalized_weights() == [0.75, 0.25]
