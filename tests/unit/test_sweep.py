"""Sweeps: execo's sweep/geom/igeom, TOML/JSON sweep files, and {{a,b}} command-line braces."""
from __future__ import annotations

import json
import re
import textwrap

import pytest

from dbdict_worker.errors import StateError, UsageError
from dbdict_worker.params import combinations, read_confs, split
from dbdict_worker.state import parse_params
from dbdict_worker.sweeps import expand_braces, geom, igeom, load_sweep_file, sweep

# execo_engine's documented conditional example (seed 003).
EXECO_PARAMS = {
    "param 1": ["a", "b"],
    "param 2": {
        1: {"param 1 1": ["x", "y"], "param 1 2": [0.0, 1.0]},
        2: {"param 2 1": [-10, 10]},
    },
}
# Its documented result: 12 combinations.
EXECO_RESULT = [
    {"param 1 2": 0.0, "param 1 1": "x", "param 1": "a", "param 2": 1},
    {"param 1 2": 0.0, "param 1 1": "y", "param 1": "a", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "x", "param 1": "a", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "y", "param 1": "a", "param 2": 1},
    {"param 2 1": -10, "param 1": "a", "param 2": 2},
    {"param 2 1": 10, "param 1": "a", "param 2": 2},
    {"param 1 2": 0.0, "param 1 1": "x", "param 1": "b", "param 2": 1},
    {"param 1 2": 0.0, "param 1 1": "y", "param 1": "b", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "x", "param 1": "b", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "y", "param 1": "b", "param 2": 1},
    {"param 2 1": -10, "param 1": "b", "param 2": 2},
    {"param 2 1": 10, "param 1": "b", "param 2": 2},
]

EXECO_TOML = """\
"param 1" = ["a", "b"]

["param 2".1]
"param 1 1" = ["x", "y"]
"param 1 2" = [0.0, 1.0]

["param 2".2]
"param 2 1" = [-10, 10]
"""

EXECO_JSON = {
    "param 1": ["a", "b"],
    "param 2": {"1": {"param 1 1": ["x", "y"], "param 1 2": [0.0, 1.0]},
                "2": {"param 2 1": [-10, 10]}},
}


def canonical(combos):
    """Order-independent and type-aware form of a list of combinations."""
    return sorted(tuple(sorted((k, type(v).__name__, v) for k, v in c.items())) for c in combos)


def assert_execo_result(combos):
    assert len(combos) == 12
    assert canonical(combos) == canonical(EXECO_RESULT)
    for c in combos:
        assert type(c["param 2"]) is int
        if "param 1 2" in c:
            assert type(c["param 1 2"]) is float


# --- sweep ------------------------------------------------------------------------------------

def test_sweep_simple_example_in_execo_order():
    assert sweep({"param 1": ["a", "b"], "param 2": [1, 2]}) == [
        {"param 1": "a", "param 2": 1}, {"param 1": "a", "param 2": 2},
        {"param 1": "b", "param 2": 1}, {"param 1": "b", "param 2": 2}]


def test_sweep_conditional_example_from_python():
    combos = sweep(EXECO_PARAMS)
    assert_execo_result(combos)
    assert all(type(c) is dict for c in combos)
    assert combos[0]["param 1"] == "a" and combos[-1]["param 1"] == "b"  # first factor slowest


def test_sweep_empty_factor_is_left_out_and_scalar_is_one_level():
    assert sweep({"a": [], "b": {}, "c": [1, 2], "d": "fixed"}) == [
        {"c": 1, "d": "fixed"}, {"c": 2, "d": "fixed"}]
    assert sweep({}) == [{}]
    assert sweep({"t": (1, 2), "r": range(2)}) == [
        {"t": 1, "r": 0}, {"t": 1, "r": 1}, {"t": 2, "r": 0}, {"t": 2, "r": 1}]


def test_sweep_level_with_no_sub_factors():
    assert sweep({"opt": {"adam": {"lr": [1, 2]}, "sgd": {}}}) == [
        {"opt": "adam", "lr": 1}, {"opt": "adam", "lr": 2}, {"opt": "sgd"}]


def test_sweep_level_that_is_not_a_table_is_an_error():
    with pytest.raises(UsageError, match=r"factor 'model': level 'n_hidden'.*\"model\.n_hidden\""):
        sweep({"model": {"n_hidden": [100, 200]}})


# --- geom / igeom -----------------------------------------------------------------------------

def test_geom_progression_with_exact_ends():
    values = geom(1, 1000, 4)
    assert values[0] == 1.0 and values[-1] == 1000.0 and len(values) == 4
    assert values[1:3] == pytest.approx([10.0, 100.0])
    assert all(type(v) is float for v in values)
    assert geom(1, 10, 0) == [] and geom(3, 10, 1) == [3.0]
    assert geom(-1, -100, 3) == pytest.approx([-1.0, -10.0, -100.0])


@pytest.mark.parametrize("args", [(0, 10, 3), (-1, 10, 3), (1, 10, -1)])
def test_geom_refuses_impossible_progressions(args):
    with pytest.raises(ValueError):
        geom(*args)


def test_igeom_sorted_unique_rounded_ints():
    assert igeom(1, 8, 4) == [1, 2, 4, 8]
    assert igeom(1, 2, 5) == [1, 2]  # rounding collapses duplicates
    assert igeom(1, 1000, 4) == [1, 10, 100, 1000]
    assert igeom(5, 10, 0) == [] and igeom(5, 10, 1) == [5]
    assert all(type(v) is int for v in igeom(1, 100, 10))


# --- sweep files ------------------------------------------------------------------------------

def test_load_sweep_file_toml_reproduces_execo_example(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(EXECO_TOML)
    assert_execo_result(load_sweep_file(path))


def test_load_sweep_file_json_reproduces_execo_example(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(EXECO_JSON))
    assert_execo_result(load_sweep_file(path))


@pytest.mark.parametrize("text", [json.dumps(EXECO_JSON), EXECO_TOML])
def test_load_sweep_file_without_suffix_tries_json_then_toml(tmp_path, text):
    path = tmp_path / "sweep.txt"
    path.write_text(text)
    assert_execo_result(load_sweep_file(path))


def test_load_sweep_file_level_keys_are_parsed_and_dotted_keys_kept(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""\
        "model.n_hidden" = [100, 200]
        [optimizer.adam]
        "opt.lr" = [0.5]
        [optimizer.sgd]
        [dropout."0.5"]
    """))
    combos = load_sweep_file(path)
    assert combos == [
        {"model.n_hidden": 100, "optimizer": "adam", "opt.lr": 0.5, "dropout": 0.5},
        {"model.n_hidden": 100, "optimizer": "sgd", "dropout": 0.5},
        {"model.n_hidden": 200, "optimizer": "adam", "opt.lr": 0.5, "dropout": 0.5},
        {"model.n_hidden": 200, "optimizer": "sgd", "dropout": 0.5},
    ]


def test_load_sweep_file_refuses_a_level_that_clashes_with_a_key(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[opt.adam]\n"opt.lr" = [0.5]\n')
    with pytest.raises(StateError, match=r"s\.toml.*'opt' and 'opt\.lr' conflict"):
        load_sweep_file(path)


def test_load_sweep_file_nested_levels_become_dotted_keys(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"model": [{"n": 1, "act": "relu"}, {"n": 2, "act": "tanh"}]}))
    assert load_sweep_file(path) == [{"model.n": 1, "model.act": "relu"},
                                     {"model.n": 2, "model.act": "tanh"}]


@pytest.mark.parametrize("name, text, fmt", [("bad.toml", "a = [1,", "TOML"),
                                             ("bad.json", '{"a": [1,', "JSON")])
def test_load_sweep_file_parse_error_names_file_and_reason(tmp_path, name, text, fmt):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as e:
        load_sweep_file(path)
    message = str(e.value)
    assert name in message and f"as {fmt}:" in message and "\n" not in message


def test_load_sweep_file_bad_value_names_key_and_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("when = [1979-05-27]\n")
    with pytest.raises(StateError, match=r"s\.toml.*'when' is a date"):
        load_sweep_file(path)


def test_load_sweep_file_refuses_colliding_levels(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"n": {"1": {}, "1.0": {}}}')
    with pytest.raises(UsageError, match=r"levels '1' and '1\.0' are the same value"):
        load_sweep_file(path)


def test_load_sweep_file_top_level_must_be_a_table(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("[1, 2]")
    with pytest.raises(UsageError, match="top level"):
        load_sweep_file(path)


def test_load_sweep_file_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read sweep file"):
        load_sweep_file(tmp_path / "nope.toml")


# --- expand_braces ----------------------------------------------------------------------------

def test_expand_braces_cartesian_product_first_slowest():
    combos = expand_braces(["lr={{0.1,0.01}}", "n={{1,2,3}}"])
    assert combos == [["lr=0.1", "n=1"], ["lr=0.1", "n=2"], ["lr=0.1", "n=3"],
                      ["lr=0.01", "n=1"], ["lr=0.01", "n=2"], ["lr=0.01", "n=3"]]
    assert [parse_params(c) for c in combos][3] == {"lr": 0.01, "n": 1}


def test_expand_braces_keeps_other_args_in_place():
    assert expand_braces(["a=1", "b={{x, y}}", "m::re.compile"]) == [
        ["a=1", "b=x", "m::re.compile"], ["a=1", "b=y", "m::re.compile"]]
    assert expand_braces(["a=1"]) == [["a=1"]]
    assert expand_braces([]) == [[]]


def test_expand_braces_respects_brackets_and_quotes():
    assert expand_braces(["x={{[1,2],[3,4]}}"]) == [["x=[1,2]"], ["x=[3,4]"]]
    assert expand_braces(["s={{'a,b',c}}"]) == [["s='a,b'"], ["s=c"]]
    assert expand_braces(['t={{(1, "x,)"), 2}}']) == [['t=(1, "x,)")'], ["t=2"]]
    assert parse_params(expand_braces(["x={{[1,2],[3,4]}}"])[1]) == {"x": [3, 4]}


@pytest.mark.parametrize("arg", ["x={{}}", "x={{ }}", "x={{1,2", "x=1,2}}", "x={{[1,2}}",
                                 "x={{'a,b}}", "x={{1,,2}}", "x={{1,}}"])
def test_expand_braces_errors_name_the_arg(arg):
    with pytest.raises(UsageError, match=re.escape(repr(arg))):
        expand_braces([arg])


# --- command-line parameters (dbdict_worker.params) -------------------------------------------

def test_split_tells_conf_files_from_parameters():
    args = ["a=1", "base.conf", "b=x.conf", "m::re.compile", "more.conf"]
    assert split(args) == (["base.conf", "more.conf"], ["a=1", "b=x.conf", "m::re.compile"])


def test_read_confs_keeps_each_file_and_names_a_missing_one(tmp_path):
    (tmp_path / "a.conf").write_text("lr = 0.1\ndbdict.experiment = 'pkg.exp'\n")
    assert read_confs([str(tmp_path / "a.conf")]) == [{"lr": 0.1, "dbdict.experiment": "pkg.exp"}]
    with pytest.raises(UsageError, match="no such .conf file: .*nope.conf"):
        read_confs([str(tmp_path / "a.conf"), str(tmp_path / "nope.conf")])


def test_combinations_file_levels_slowest_inline_on_top(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"opt": ["sgd", "adam"]}))
    states = combinations({"base": 1, "lr": 9}, ["lr={{0.1,0.2}}"], sweep_file=str(path))
    assert states == [{"base": 1, "lr": 0.1, "opt": "sgd"}, {"base": 1, "lr": 0.2, "opt": "sgd"},
                      {"base": 1, "lr": 0.1, "opt": "adam"}, {"base": 1, "lr": 0.2, "opt": "adam"}]
    assert combinations({}, []) == [{}]


def test_combinations_for_one_job_refuse_a_sweep():
    assert combinations({"a": 1}, ["b=2"], single="dbdict run") == [{"a": 1, "b": 2}]
    with pytest.raises(UsageError, match=r"dbdict run runs one job: \{\{\.\.\.\}\} sweeps"):
        combinations({}, ["b={{1,2}}"], single="dbdict run")


@pytest.mark.parametrize("base, inline", [({"dbdict.id": 1}, []), ({}, ["dbdict.status=2"])])
def test_combinations_refuse_reserved_keys(base, inline):
    with pytest.raises(StateError, match="is reserved"):
        combinations(base, inline)
