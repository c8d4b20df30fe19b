"""A stage run before the stage that writes its inputs is one error line naming that stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftbench.common import paths
from ftbench.common.errors import UserError


@pytest.mark.parametrize(
    ("path", "stage"),
    [
        (paths.split_file("gsm8k", "train"), "data"),
        (paths.BASE, "model"),
        (paths.BASE / "config.json", "model"),
        (Path("models/qlora/gsm8k/seed0"), "train@qlora"),
        (Path("models/merged/qlora/gsm8k/seed0"), "merge@qlora"),
        (Path("elsewhere/model"), None),
    ],
)
def test_the_writer_of_each_stage_output(path, stage):
    assert paths.writer(path) == stage


def test_require_returns_what_exists_and_names_the_stage_for_what_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths.BASE.mkdir(parents=True)
    assert paths.require(paths.BASE) == paths.BASE
    with pytest.raises(UserError, match=r"^models/qlora/x/seed0 is missing; .*`dvc repro train@qlora`$"):
        paths.require(Path("models/qlora/x/seed0"))
    with pytest.raises(UserError, match=r"^tok does not exist$"):
        paths.require(Path("tok"))


def test_split_rows_reads_the_data_stages_rows_or_names_the_data_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"`dvc repro data`$"):
        paths.split_rows("gsm8k", "train")
    paths.split_file("gsm8k", "train").parent.mkdir(parents=True)
    paths.split_file("gsm8k", "train").write_text('{"a": 1}\n{"a": 2}\n')
    assert paths.split_rows("gsm8k", "train") == [{"a": 1}, {"a": 2}]


def test_a_missing_adapter_is_named_before_the_base_model_loads(tmp_path, monkeypatch):
    from ftbench import recipes

    monkeypatch.chdir(tmp_path)
    recipe = recipes.get("qlora")
    monkeypatch.setattr(recipe, "base", lambda path: pytest.fail("the base loaded for a missing adapter"))
    with pytest.raises(UserError, match=r"`dvc repro train@qlora`$"):
        recipe.load_trained(paths.BASE, Path("models/qlora/gsm8k/seed0"))
