import subprocess
import sys
from typing import get_args

import pytest
import yaml

from ftbench.common import commands, config
from ftbench.common.errors import UserError

from .conftest import ROOT


def write(tmp_path, mutate) -> str:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def error_for(tmp_path, mutate) -> str:
    with pytest.raises(UserError) as err:
        config.load(write(tmp_path, mutate))
    return str(err.value)


def test_a_params_file_from_before_the_pass_budget_moved_names_where_it_went(tmp_path):
    message = error_for(tmp_path, lambda p: p["train"].update(micro_batch_tokens=4096))
    assert "train.micro_batch_tokens is now each method's own key" in message and "\n" not in message


def test_a_section_that_is_no_mapping_is_one_line_naming_it(tmp_path):
    """hypothesis found `train: 1` raising a TypeError before the params were validated."""
    message = error_for(tmp_path, lambda p: p.update(train=1))
    assert message.startswith(f"{tmp_path / 'params.yaml'}: train:") and "\n" not in message


def test_project_params_load_with_the_seed_hyperparameters():
    p = config.load(ROOT / "params.yaml")
    q = p.methods["qlora"]
    assert (q.recipe, q.lr, q.epochs, q.batch_size, q.grad_accum) == ("qlora", 2e-4, 2, 4, 4)
    assert (q.lora.r, q.lora.alpha) == (16, 32)
    h = p.methods["hybrid"]
    assert (h.init, h.lr, h.epochs, h.batch_size, h.grad_accum, h.galore.rank) == (
        "merged/qlora",
        5e-5,
        1,
        2,
        8,
        128,
    )
    assert p.methods["galore"].galore.rank == 128 and p.merge["qlora"].base == "nf4"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["train"].update(warmup_steps=3), "train.warmup_steps: Extra inputs are not permitted"),
        (lambda p: p["methods"]["qlora"].update(lr="fast"), "methods.qlora.lr"),
        (lambda p: p["methods"]["qlora"].update(lr=-1.0), "methods.qlora.lr: Input should be greater than 0"),
        (lambda p: p["data"]["sizes"].update(test=0), "data.sizes.test"),
        (lambda p: p.update(seed=-3), "seed"),
        (
            lambda p: p["methods"]["galore"].update(lora={"r": 4}),
            "methods.galore.lora: Extra inputs are not permitted (recipe galore)",
        ),
        (lambda p: p["methods"]["qlora"].pop("lora"), "methods.qlora.lora: missing (recipe qlora)"),
        (
            lambda p: p["methods"]["full"].update(lr=2),
            "methods.full.lr: Input should be less than 1 (got 2) (recipe full)",
        ),
        (
            lambda p: p["methods"]["qlora"].update(recipe="dora"),
            "methods.qlora: Input tag 'dora' found using 'recipe'",
        ),
        (lambda p: p["methods"]["hybrid"].update(init="merged/nope"), "add `merge: {nope: ...}`"),
        (lambda p: p["merge"].update(galore={"base": "nf4"}), "merge needs a qlora method named galore"),
        (lambda p: p["methods"].update(base=p["methods"]["qlora"]), "not base or merged"),
        (lambda p: p["data"].update(overlong="wrap"), "data.overlong"),
        (
            lambda p: p["train"].update(cuda_graphs=True, gradient_checkpointing=True),
            "cuda_graphs: true does not combine with gradient_checkpointing: true",
        ),
        (
            lambda p: (
                p["train"].update(cuda_graphs=True) or p["methods"]["galore"]["galore"].update(layerwise=True)
            ),
            "methods.galore.galore.layerwise: true does not combine with train.cuda_graphs: true",
        ),
    ],
)
def test_bad_params_name_the_key(tmp_path, mutate, expected):
    message = error_for(tmp_path, mutate)
    assert expected in message and "\n" not in message


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(UserError, match="not found"):
        config.load(tmp_path / "absent.yaml")


def test_a_stage_reports_bad_params_in_one_line_without_traceback(tmp_path):
    write(tmp_path, lambda p: p["evaluate"].update(batch_size=0))
    run = subprocess.run(
        [sys.executable, "-m", "ftbench", "report"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "ftbench: error: params.yaml: evaluate.batch_size: "
        "Input should be auto or a whole number above 0 (got 0)"
    ]
    assert not (tmp_path / "metrics").exists()


def entry_class(classes: list, node: dict):
    """The class of `classes` that validates `node`: a method's, by its recipe (config's union)."""
    recipe = node.get("recipe")
    for cls in classes:
        field = cls.model_fields.get("recipe")
        if field is None or recipe in get_args(field.annotation):
            return cls
    return None


def values_in_params_yaml(cls: type[config.Strict], node: dict, found: dict) -> None:
    """found[(class, field)] += the value params.yaml gives that field, for every entry that sets it."""
    for name, field in cls.model_fields.items():
        if name not in node:
            continue
        found.setdefault((cls.__name__, name), []).append(node[name])
        inner, entries = commands.models_in(field.annotation)
        if inner and isinstance(node[name], dict):
            for child in node[name].values() if entries else [node[name]]:
                values_in_params_yaml(entry_class(inner, child), child, found)


def defaults(cls: type[config.Strict], seen: dict) -> dict:
    """(class, field) -> default, for every field with one, in cls and the classes it holds."""
    for name, field in cls.model_fields.items():
        if not field.is_required():
            seen[(cls.__name__, name)] = field.get_default()
        for inner in commands.models_in(field.annotation)[0]:
            defaults(inner, seen)
    return seen


def test_every_default_is_a_value_params_yaml_spells_out():
    """params.yaml is the one source: a default left in config.py (only inside entries a user adds) must
    be the value that one of params.yaml's own entries writes out for it."""
    found: dict = {}
    values_in_params_yaml(config.Params, yaml.safe_load((ROOT / "params.yaml").read_text()), found)
    differ = {
        key: default
        for key, default in defaults(config.Params, {}).items()
        if default not in found.get(key, [])
    }
    assert not differ, f"defaults in config.py that params.yaml does not spell out: {differ}"


@pytest.mark.parametrize("key", ["seed", "train.checkpoint_every_s", "train.cuda_graphs", "evaluate"])
def test_a_missing_key_is_one_line_naming_it(tmp_path, key):
    *parents, leaf = key.split(".")

    def drop(p):
        node = p
        for name in parents:
            node = node[name]
        del node[leaf]

    message = error_for(tmp_path, drop)
    assert f"params.yaml: {key}: missing; add it" in message and "\n" not in message
