import pytest

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


def test_json_round_trip_is_whole(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_jsonl(tmp_path / "a.jsonl", [{"t": "é"}, {"t": "日本"}])
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    # UTF-8 text as written, not \u escapes: the prediction files stay readable
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8") == '{"t": "é"}\n{"t": "日本"}\n'
    assert read_jsonl(tmp_path / "a.jsonl") == [{"t": "é"}, {"t": "日本"}]
