import pytest

from ftbench.atomic import atomic_path, read_jsonl, write_json, write_jsonl


def test_failure_mid_write_keeps_the_old_output_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_json_round_trip_is_whole(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_jsonl(tmp_path / "a.jsonl", [{"t": "é"}, {"t": "日本"}])
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert read_jsonl(tmp_path / "a.jsonl") == [{"t": "é"}, {"t": "日本"}]
