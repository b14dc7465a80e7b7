"""The library side of dbdict-enqueue's rough edges: counting sweeps without making them,
empty factors, .conf files read back and not UTF-8, table lists, and the experiment check."""
from __future__ import annotations

import json
import sys
import time

import pytest

from dbdict_worker.errors import StateError, UsageError
from dbdict_worker.expcheck import check_experiment
from dbdict_worker.names import one_table, table_list
from dbdict_worker.params import Combinations, check_count, combinations, conf_base, read_confs
from dbdict_worker.sweeps import count_sweep, iter_sweep, load_sweep_file, read_sweep_file, sweep
from tests.unit.test_sweep import EXECO_PARAMS, EXECO_TOML, assert_execo_result


# --- counting and streaming -------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    EXECO_PARAMS, {}, {"a": [], "b": 1}, {"a": range(7), "b": (1, 2), "c": "x"},
    {"opt": {"adam": {"lr": [1, 2], "b": {"x": {}, "y": {"z": [1, 2, 3]}}}, "sgd": {}}},
])
def test_count_and_iter_sweep_agree_with_sweep(params):
    combos = sweep(params)
    assert count_sweep(params) == len(combos)
    assert list(iter_sweep(params)) == combos


def test_count_of_a_huge_sweep_is_instant():
    params = {f"f{i}": list(range(100)) for i in range(10)}
    start = time.monotonic()
    assert count_sweep(params) == 100 ** 10
    first = next(iter(iter_sweep(params)))
    assert first == {f"f{i}": 0 for i in range(10)}
    assert time.monotonic() - start < 1


def test_combinations_count_iterate_again_and_match_the_list(tmp_path):
    (tmp_path / "s.toml").write_text(EXECO_TOML)
    combos = Combinations({"base": 1}, ["lr={{0.1,0.2}}", "m::re.compile"],
                          sweep_file=str(tmp_path / "s.toml"))
    assert combos.count == 24
    made = list(combos)
    assert made == list(combos)  # a retried transaction reads the same states again
    assert len(made) == 24 and all(s["base"] == 1 and "m.__builder__" in s for s in made)
    assert made == combinations({"base": 1}, ["lr={{0.1,0.2}}", "m::re.compile"],
                                sweep_file=str(tmp_path / "s.toml"))
    assert_execo_result([{k: v for k, v in s.items() if k in
                          ("param 1", "param 2", "param 1 1", "param 1 2", "param 2 1")}
                         for s in made[::2]])


def test_combinations_check_every_argument_up_front():
    with pytest.raises(StateError, match="conflict"):
        Combinations({}, ["a={{1,2}}", "a.b=3"])
    with pytest.raises(StateError, match="reserved"):
        Combinations({"dbdict.id": 1}, [])


def test_check_count_limit_and_yes():
    check_count(10, yes=False, limit=10)
    with pytest.raises(UsageError, match=r"makes 11 jobs, more than 10: .* --yes"):
        check_count(11, yes=False, limit=10)
    check_count(10 ** 12, yes=True, limit=10)


# --- empty factors ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, key", [
    ({"lr": []}, "'lr'"), ({"n": [1], "opt": {}}, "'opt'"),
    ({"opt": {"adam": {"lr": []}, "sgd": {}}}, "'opt.adam.lr'"),
])
def test_sweep_files_refuse_empty_factors(tmp_path, data, key):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=rf"s\.json.*factor {key} = .* has no levels"):
        load_sweep_file(path)


def test_a_level_with_no_sub_factors_is_still_fine(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[opt.adam]\nlr = [1, 2]\n[opt.sgd]\n")
    assert count_sweep(read_sweep_file(path)) == 3
    assert load_sweep_file(path)[-1] == {"opt": "sgd"}


# --- .conf files ------------------------------------------------------------------------------

def test_conf_base_reads_back_orig_and_current_conf(tmp_path):
    orig = tmp_path / "orig.conf"
    orig.write_text("dbdict.experiment = 'pkg.exp'\nlr = 0.1\n")
    current = tmp_path / "current.conf"
    current.write_text("dbdict.experiment = 'pkg.exp'\ndbdict.id = 7\n"
                       "dbdict.status = 'DONE'\nlr = 0.2\nloss = 1.5\n")
    assert conf_base([str(orig)], "pkg.exp") == ({"lr": 0.1}, [])
    base, notes = conf_base([str(orig), str(current)], "pkg.exp")
    assert base == {"lr": 0.2, "loss": 1.5}
    assert notes == [f"note: {current}: ignored its per-job keys (dbdict.id, dbdict.status)"]
    with pytest.raises(UsageError, match=r"orig\.conf: dbdict\.experiment = 'pkg\.exp', but "
                                         r"the command line enqueues 'other\.run'"):
        conf_base([str(orig)], "other.run")


@pytest.mark.parametrize("data, line", [(b"\xff = 1\n", 1), (b"a = 1\n\nb = '\xc3'\n", 3),
                                        (b"# \xe9\n", 1)])
def test_read_confs_names_the_line_that_is_not_utf8(tmp_path, data, line):
    path = tmp_path / "bad.conf"
    path.write_bytes(data)
    with pytest.raises(UsageError, match=rf"bad\.conf:{line}: not valid UTF-8"):
        read_confs([str(path)])


# --- table lists ------------------------------------------------------------------------------

def test_table_list_and_one_table():
    assert table_list(None) is None
    assert table_list("t1") == ["t1"]
    assert table_list(" t1 , t2,") == ["t1", "t2"]
    for bad in ("", ",", "t1,a/b"):
        with pytest.raises(UsageError, match="invalid table name"):
            table_list(bad)
    assert one_table("t1") == "t1" and one_table("t1,") == "t1" and one_table(None) is None
    with pytest.raises(UsageError, match=r"^dbdict-enqueue takes one table; "
                                         r"DBDICT_TABLE=t1,t2 names 2$"):
        one_table("t1,t2", "DBDICT_TABLE")


# --- the experiment check ---------------------------------------------------------------------

@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A directory of modules, the current directory, forgotten by sys.modules after."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_a_module_in_the_current_directory_is_checked_with_a_note(user_code):
    (user_code / "edges_cwd_mod.py").write_text("def run(state, channel):\n    pass\n")
    (note,) = check_experiment("edges_cwd_mod.run")
    assert note == (f"note: edges_cwd_mod is importable from the current directory only: "
                    f"start the workers with PYTHONPATH={user_code}, or install it "
                    "(pip install -e), for them to find it")
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        check_experiment("edges_cwd_mod.nope")
    assert check_experiment("json.dumps") == []
    assert "not importable here" in check_experiment("edges_no_such_mod.run")[0]


def test_an_import_that_raises_is_a_warning_and_no_check_imports_nothing(user_code):
    (user_code / "edges_boom.py").write_text("open('imported', 'a').close()\n"
                                             "raise RuntimeError('no GPU')\n")
    assert check_experiment("edges_boom.run", import_code=False) == []
    assert not (user_code / "imported").exists()
    (_, warning) = check_experiment("edges_boom.run")
    assert warning.startswith("warning: ") and "RuntimeError: no GPU" in warning
    assert (user_code / "imported").exists()
    with pytest.raises(UsageError, match="dotted path"):
        check_experiment("nodot", import_code=False)
