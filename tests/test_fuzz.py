"""Bad input never crashes: each fuzzed input either loads or raises the project's own UserError."""

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftbench.common import config
from ftbench.common.errors import UserError
from ftbench.data import prepare

from .conftest import ROOT

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def paths_of(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from paths_of(v, (*prefix, k))


PATHS = list(paths_of(BASE))


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_params_loader_loads_or_names_the_problem(tmp_path_factory, edits):
    params = copy.deepcopy(BASE)
    for path, value in edits:
        node = params
        for key in path[:-1]:
            node = node[key] if isinstance(node, dict) and isinstance(node.get(key), dict) else None
            if node is None:
                break
        if node is not None:
            node[path[-1]] = value
    f = tmp_path_factory.mktemp("p") / "params.yaml"
    f.write_text(yaml.safe_dump(params))
    try:
        config.load(f)
    except UserError as err:
        assert str(err).startswith(f"{f}: ") and "\n" not in str(err)


@FAST
@given(text=st.text(max_size=200))
def test_params_loader_names_the_file_in_one_line_for_any_text(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("p") / "params.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as err:  # no text this short holds every required key
        config.load(f)
    assert str(err.value).startswith(f"{f}: ") and "\n" not in str(err.value)


ROWS = st.lists(
    st.dictionaries(
        st.sampled_from(
            [
                "instruction",
                "input",
                "output",
                "context",
                "response",
                "messages",
                "conversations",
                "question",
                "x",
            ]
        ),
        VALUES,
        max_size=4,
    ),
    max_size=4,
)


def read_and_normalise(path) -> None:
    rows = prepare._read_file(path)
    if not rows:
        return
    fmt = prepare.detect_format(prepare._as_dict(rows[0], "d", 0), "auto")
    for i, row in enumerate(rows):
        prepare.normalise(prepare._as_dict(row, "d", i), fmt, f"row {i + 1}")


@FAST
@given(rows=ROWS, suffix=st.sampled_from([".json", ".jsonl"]))
def test_json_readers_load_or_raise_user_error(tmp_path_factory, rows, suffix):
    f = tmp_path_factory.mktemp("d") / f"rows{suffix}"
    body = json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    f.write_text(body)
    try:
        read_and_normalise(f)
    except UserError as err:
        assert "\n" not in str(err)


@FAST
@given(raw=st.binary(max_size=120), suffix=st.sampled_from([".json", ".jsonl", ".csv", ".parquet"]))
def test_any_bytes_load_or_raise_user_error(tmp_path_factory, raw, suffix):
    f = tmp_path_factory.mktemp("d") / f"rows{suffix}"
    f.write_bytes(raw)
    try:
        read_and_normalise(f)
    except UserError as err:
        assert "\n" not in str(err)


def test_csv_row_with_extra_cells_is_a_user_error(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("instruction,output\nSay hi,Hi.\nSay bye,Bye.,extra\n")
    with pytest.raises(UserError, match="line 3: more cells than the header"):
        read_and_normalise(f)
