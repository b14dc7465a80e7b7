"""The search's space file and its in-memory study, without workers: parsing, bad spaces,
conditional parameters, seeded sequences, and the enqueue of trials (on both backends)."""
from __future__ import annotations

import pytest

pytest.importorskip("optuna")

from dbdict_worker.constants import Status  # noqa: E402
from dbdict_worker.db import search as dbsearch  # noqa: E402
from dbdict_worker.db.search import TrialRow  # noqa: E402
from dbdict_worker.errors import UsageError  # noqa: E402
from dbdict_worker.search import study as studymod  # noqa: E402
from dbdict_worker.search.space import load_space, parse_space  # noqa: E402

SPACE = """
lr = {type = "float", low = 1e-5, high = 1e-1, log = true}
dropout = {type = "uniform", low = 0.0, high = 0.5}
layers = {type = "int", low = 1, high = 8, step = 1}
act = ["relu", "tanh"]
epochs = 10

[optimizer.adam]
beta1 = {type = "float", low = 0.8, high = 0.99}

[optimizer.sgd]
momentum = {type = "float", low = 0.0, high = 0.99}
nesterov = [true, false]
"""


def _space(tmp_path, text=SPACE):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return load_space(path)[0]


def test_space_kinds_fixed_and_conditional(tmp_path):
    space = _space(tmp_path)
    mirror = studymod.StudyMirror("s", space, studymod.make_sampler("random", space, 1),
                                  studymod.make_pruner("none"), "minimize")
    seen = set()
    for _ in range(30):
        _, st = mirror.ask()
        assert st["epochs"] == 10
        assert 1e-5 <= st["lr"] <= 1e-1 and 0 <= st["dropout"] <= 0.5
        assert isinstance(st["layers"], int) and 1 <= st["layers"] <= 8
        assert st["act"] in ("relu", "tanh")
        seen.add(st["optimizer"])
        if st["optimizer"] == "adam":  # only the chosen branch's parameters are sampled
            assert "beta1" in st and "momentum" not in st and "nesterov" not in st
        else:
            assert "momentum" in st and "nesterov" in st and "beta1" not in st
        # A restarted driver rebuilds the same parameters from the job's state.
        params, dists = space.from_state(st)
        assert set(params) == set(dists) and params["optimizer"] == st["optimizer"]
    assert seen == {"adam", "sgd"}


@pytest.mark.parametrize("text,message", [
    ('x = {type = "gaussian", low = 0, high = 1}', "unknown type 'gaussian'"),
    ('x = {type = "float", low = 1, high = 1}', "low (1) must be below high (1)"),
    ('x = {type = "float", low = 0, high = 1, log = true}', "a log scale needs low > 0"),
    ('x = {type = "categorical", choices = []}', "empty choices"),
    ('x = []', "empty choices"),
    ('x = {type = "int", low = 0.5, high = 3}', "integer low, high and step"),
    ('x = {type = "float", low = 0, hi = 1}', "unknown setting 'hi'"),
    ('x = 3', "no parameter to search"),
    ('x = {a = 3}', "choice 'a' must map to a table"),
    ('x = {type = "float", low = 0', "cannot parse"),
])
def test_bad_space_is_one_line_error(tmp_path, text, message):
    with pytest.raises(UsageError) as e:
        _space(tmp_path, text)
    assert message in str(e.value) and "space.toml" in str(e.value)
    assert "\n" not in str(e.value)


def test_same_seed_same_points_sequentially():
    space = parse_space({"x": {"type": "float", "low": -5, "high": 10},
                         "k": ["a", "b", "c"]})

    def points(seed):
        mirror = studymod.StudyMirror("s", space, studymod.make_sampler("tpe", space, seed),
                                      studymod.make_pruner("none"), "minimize")
        out = []
        for n in range(15):
            number, st = mirror.ask()
            out.append(st)
            row = TrialRow(n, number, Status.DONE, {**st, "v": st["x"] ** 2})
            mirror.tell(row, "v", {})
        return out

    assert points(7) == points(7)
    assert points(7) != points(8)


def test_grid_rebuilt_trials_are_not_asked_again():
    space = parse_space({"n": {"type": "int", "low": 0, "high": 2}, "k": ["a", "b"]})
    assert studymod.grid_size(space) == 6
    first = studymod.StudyMirror("g", space, studymod.make_sampler("grid", space, 0),
                                 studymod.make_pruner("none"), "minimize")
    done = []
    for n in range(3):
        number, st = first.ask()
        done.append(TrialRow(n, number, Status.DONE if n else Status.RUNNING, {**st, "v": 1.0}))
    # A restarted driver: the three trials come from the database, one still running.
    again = studymod.StudyMirror("g", space, studymod.make_sampler("grid", space, 0),
                                 studymod.make_pruner("none"), "minimize")
    for row in done:
        again.add(row, "v", {})
    rest = [again.ask()[1] for _ in range(3)]
    points = {(r.state["n"], r.state["k"]) for r in done} | {(s["n"], s["k"]) for s in rest}
    assert len(points) == 6


def test_grid_refuses_a_continuous_parameter():
    space = parse_space({"x": {"type": "float", "low": 0, "high": 1}})
    with pytest.raises(UsageError, match="grid sampler needs"):
        studymod.make_sampler("grid", space, 0)


def test_trial_enqueue_numbers_and_equal_params(store):
    """Trials are numbered 0.. in the enqueue's transaction; equal parameters in two
    trials make two jobs (not deduplicated away)."""
    sid = store.transaction(lambda c: dbsearch.create_search(c, "s1", {
        "table_id": __import__("dbdict_worker.db.enqueue", fromlist=["x"]).ensure_table(c, "t"),
        "experiment": "e.f", "space": "{}", "objective": "v", "direction": "minimize",
        "sampler": "random", "budget": 3, "max_pending": 3}))
    from dbdict_worker.state import param_hash

    made = [store.transaction(lambda c: dbsearch.enqueue_trial(
        c, search_id=sid, table="t", experiment="e.f", flat={"x": 1}, params_hash=param_hash(
            {"x": 1}), max_attempts=3, policy=None)) for _ in range(3)]
    assert [n for _, n in made] == [0, 1, 2]
    assert len({j for j, _ in made}) == 3
    rows = store.transaction(lambda c: dbsearch.trials(c, sid))
    assert [(r.trial, r.status, r.state) for r in rows] == [(i, Status.START, {"x": 1})
                                                            for i in range(3)]


def test_one_driver_lock_per_search(store):
    """The driver's lock: a second holder waits until the first lets go (PostgreSQL: an
    advisory lock of the session; SQLite: a lock file), and other searches are free."""
    first = dbsearch.SearchLock(store.engine, "s")
    second = dbsearch.SearchLock(store.engine, "s")
    other = dbsearch.SearchLock(store.engine, "t")
    try:
        assert first.try_acquire() and first.check()
        assert not second.try_acquire()
        assert other.try_acquire()
        first.release()
        assert second.try_acquire() and second.check()
    finally:
        for lock in (first, second, other):
            lock.release()
