import os

import pytest

from ftbench.common import atomic
from ftbench.common.atomic import atomic_path, read_jsonl, write_json, write_jsonl


def test_failure_mid_write_keeps_the_old_output_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "model"
    with atomic_path(target, is_dir=True) as tmp:
        # staged in the target's own folder, so the final rename never crosses a filesystem
        assert tmp.parent.parent == target.parent
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_success_replaces_an_existing_output_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights").write_text("v1")
        (tmp / "stale").write_text("v1 only")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["weights"]
    assert (target / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_replaced_file_is_never_missing(tmp_path, monkeypatch):
    """A checkpoint read while the next one is written (or a run killed then) finds the old or the new
    file, never none: the rename puts the new one over the old in one step."""
    target = tmp_path / "state.pt"
    target.write_text("step 1")
    seen = []
    rename = os.replace

    def replace(src, dst):
        seen.append(target.read_text())  # what a reader finds just before the rename
        rename(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with atomic_path(target) as tmp:
        tmp.write_text("step 2")
    assert seen == ["step 1"] and target.read_text() == "step 2"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


@pytest.mark.parametrize(("old_is_dir", "new_is_dir"), [(True, True), (False, True), (True, False)])
def test_a_folder_and_a_file_replace_each_other(tmp_path, old_is_dir, new_is_dir):
    target = tmp_path / "out"
    if old_is_dir:
        target.mkdir()
        (target / "old").write_text("old")
    else:
        target.write_text("old")
    with atomic_path(target, is_dir=new_is_dir) as tmp:
        (tmp / "new" if new_is_dir else tmp).write_text("new")
    assert (target / "new" if new_is_dir else target).read_text() == "new"
    assert not (target / "old").exists() if new_is_dir else target.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_json_round_trip_is_whole(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_jsonl(tmp_path / "a.jsonl", [{"t": "é"}, {"t": "日本"}])
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    # UTF-8 text as written, not \u escapes: the prediction files stay readable
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8") == '{"t": "é"}\n{"t": "日本"}\n'
    assert read_jsonl(tmp_path / "a.jsonl") == [{"t": "é"}, {"t": "日本"}]
