"""``dbdict search`` with real ``dbdict-worker start`` processes: the budget is exact, a
killed driver is restarted with no duplicate and no lost trial, two drivers take turns, a bad
space is one line and exit 2, the grid sampler covers its grid."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from dbdict_worker.store import Store  # noqa: E402
from tests.acceptance.conftest import BIN  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

FAST = ("--heartbeat", "0.5", "--lease", "5")
BRANIN = "dbdict_worker.search.synthetic.branin"
SPACE = """
x = {type = "float", low = -5, high = 10}
y = {type = "float", low = 0, high = 15}
delay = %s
"""


def _space(tmp_path: Path, delay: float = 0.0) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE % delay)
    return path


def _trials(url: str, name: str) -> list[tuple[int, int, str, dict]]:
    """(trial, job id, status, params) of the search's trials, by trial number."""
    from dbdict_worker.db import search as dbsearch

    with Store.open(url) as store:
        def read(conn):
            found = dbsearch.get_search(conn, name)
            return dbsearch.trials(conn, found["id"]) if found else []
        rows = store.transaction(read)
    return [(r.trial, r.job_id, r.status.name, {k: r.state.get(k) for k in ("x", "y")})
            for r in rows]


def _driver(url: str, cwd: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    env["DBDICT_DB"] = url
    return subprocess.Popen([str(BIN / "dbdict"), "search", *args], cwd=cwd, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _assert_exact(rows: list, budget: int) -> None:
    assert [t for t, *_ in rows] == list(range(budget))
    assert len({j for _, j, *_ in rows}) == budget
    params = [(p["x"], p["y"]) for *_, p in rows]
    assert len(set(params)) == budget  # each trial's point enqueued once
    assert all(s == "DONE" for _, _, s, _ in rows)


def test_search_runs_exactly_the_budget_and_shows_status(cli, workers, db_url, tmp_path):
    w = workers(db_url, "w", *FAST, "--slots", "2")
    out = cli("dbdict", "search", BRANIN, "--space", str(_space(tmp_path)), "--objective",
              "value", "--budget", "6", "--max-pending", "2", "--seed", "3", "--name", "b",
              "--poll", "0.2", timeout=60).stdout
    assert "search b finished: 6 done, 0 failed, 0 pruned of 6" in out
    assert "best: job " in out and " value=" in out
    _assert_exact(_trials(db_url, "b"), 6)
    status = cli("dbdict", "search", "--status", "b").stdout
    assert "trials: 6 of 6: 6 done, 0 failed, 0 pruned, 0 pending" in status
    assert "best: job " in status
    # The same command again: the search is there and finished; nothing more is enqueued.
    cli("dbdict", "search", BRANIN, "--space", str(_space(tmp_path)), "--objective", "value",
        "--budget", "6", "--max-pending", "2", "--seed", "3", "--name", "b", "--poll", "0.2")
    assert len(_trials(db_url, "b")) == 6
    # Other arguments under the same name are refused.
    bad = cli("dbdict", "search", BRANIN, "--space", str(_space(tmp_path)), "--objective",
              "value", "--budget", "9", "--max-pending", "2", "--seed", "3", "--name", "b",
              ok=False)
    assert bad.returncode == 2 and "exists with other arguments: budget" in bad.stderr
    w.signal()
    w.wait()


def test_bad_space_is_one_line_and_exit_2(cli, tmp_path):
    space = tmp_path / "bad.toml"
    space.write_text('lr = {type = "float", low = 0, high = 1, log = true}\n')
    proc = cli("dbdict", "search", BRANIN, "--space", str(space), "--objective", "value",
               ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "bad.toml" in proc.stderr and "a log scale needs low > 0" in proc.stderr


def test_driver_killed_and_restarted_no_duplicate_no_loss(pg_url, workers, tmp_path):
    workers(pg_url, "w", *FAST, "--slots", "2")
    args = (BRANIN, "--space", str(_space(tmp_path, 0.4)), "--objective", "value",
            "--budget", "10", "--max-pending", "2", "--seed", "1", "--name", "k",
            "--poll", "0.1")
    first = _driver(pg_url, tmp_path, tmp_path / "d1.log", *args)
    wait_for(lambda: len(_trials(pg_url, "k")) >= 4, 30, "4 trials enqueued")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = _driver(pg_url, tmp_path, tmp_path / "d2.log", *args)
    assert second.wait(60) == 0, (tmp_path / "d2.log").read_text()
    log = (tmp_path / "d2.log").read_text()
    assert "continuing with" in log and "finished:" in log
    _assert_exact(_trials(pg_url, "k"), 10)


def test_two_drivers_one_acts_the_other_takes_over(pg_url, workers, tmp_path):
    workers(pg_url, "w", *FAST, "--slots", "2")
    args = (BRANIN, "--space", str(_space(tmp_path, 0.4)), "--objective", "value",
            "--budget", "10", "--max-pending", "2", "--seed", "1", "--name", "two",
            "--poll", "0.1")
    a = _driver(pg_url, tmp_path, tmp_path / "a.log", *args)
    wait_for(lambda: len(_trials(pg_url, "two")) >= 2, 30, "driver a's first trials")
    b = _driver(pg_url, tmp_path, tmp_path / "b.log", *args)
    wait_for(lambda: "waiting for its lock" in (tmp_path / "b.log").read_text(), 30,
             "driver b waiting")
    wait_for(lambda: len(_trials(pg_url, "two")) >= 5, 30, "driver a going on")
    assert "continuing" not in (tmp_path / "b.log").read_text()  # b has not acted
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    assert b.wait(60) == 0, (tmp_path / "b.log").read_text()
    assert "continuing with" in (tmp_path / "b.log").read_text()
    _assert_exact(_trials(pg_url, "two"), 10)


def test_grid_sampler_covers_its_grid(pg_cli, workers, pg_url, tmp_path):
    space = tmp_path / "grid.toml"
    space.write_text('x = {type = "int", low = -2, high = 2, step = 2}\ny = [1.0, 5.0]\n')
    w = workers(pg_url, "w", *FAST, "--slots", "2")
    out = pg_cli("dbdict", "search", BRANIN, "--space", str(space), "--objective", "value",
                 "--sampler", "grid", "--budget", "50", "--max-pending", "3", "--name", "g",
                 "--poll", "0.1", timeout=60).stdout
    assert "finished: 6 done, 0 failed, 0 pruned of 6" in out  # the budget capped at 6
    rows = _trials(pg_url, "g")
    assert {(p["x"], p["y"]) for *_, p in rows} == {(x, y) for x in (-2, 0, 2)
                                                    for y in (1.0, 5.0)}
    w.signal()
    w.wait()


CURVE = "dbdict_worker.search.synthetic.curve"


def test_pruner_stops_bad_trials_early(pg_cli, workers, pg_url, tmp_path):
    """With --pruner median, trials whose reported loss is above the median of the earlier
    ones at the same step are asked to stop: they end PRUNED, before their last step, and
    the search still ends with exactly its budget."""
    space = tmp_path / "curve.toml"
    space.write_text('lr = {type = "float", low = 1e-4, high = 1.0, log = true}\n'
                     'width = {type = "int", low = 8, high = 512, log = true}\n'
                     'steps = 25\ndelay = 0.1\n')
    workers(pg_url, "w", *FAST, "--slots", "2",
            env={"DBDICT_REPORT_INTERVAL": "0.1", "DBDICT_METRICS_INTERVAL": "0.2"})
    out = pg_cli("dbdict", "search", CURVE, "--space", str(space), "--objective", "loss",
                 "--pruner", "median", "--budget", "14", "--max-pending", "2", "--seed", "2",
                 "--name", "p", "--poll", "0.1", timeout=90).stdout
    assert "pruning requested" in out
    with Store.open(pg_url) as store:
        jobs = store.jobs_with_state(tables="default")
    assert len(jobs) == 14
    pruned = [st for j, st in jobs if j.status.name == "PRUNED"]
    assert pruned and all(st["steps_run"] < 25 for st in pruned)
    status = pg_cli("dbdict", "search", "--status", "p").stdout
    assert f"{len(pruned)} pruned, 0 pending" in status


def test_sigterm_stops_the_driver_and_the_search_continues(pg_url, workers, tmp_path):
    args = (BRANIN, "--space", str(_space(tmp_path)), "--objective", "value", "--budget",
            "4", "--max-pending", "2", "--seed", "5", "--name", "t", "--poll", "0.1")
    first = _driver(pg_url, tmp_path, tmp_path / "t1.log", *args)  # no worker yet
    wait_for(lambda: len(_trials(pg_url, "t")) == 2, 30, "2 trials queued")
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 128 + signal.SIGTERM
    assert "stopped: the trials already queued keep running" in (tmp_path / "t1.log").read_text()
    workers(pg_url, "w", *FAST, "--slots", "2")
    second = _driver(pg_url, tmp_path, tmp_path / "t2.log", *args)  # the lock was let go
    assert second.wait(60) == 0, (tmp_path / "t2.log").read_text()
    _assert_exact(_trials(pg_url, "t"), 4)


def test_a_trial_whose_worker_is_stopped_is_resumed_not_failed(pg_url, workers, tmp_path):
    """SIGTERM to the worker running a trial: the trial goes back to the queue (pending,
    not told as failed), another worker resumes it from its save, its reported curve goes
    on from its last step, and the search ends with its budget, none failed."""
    space = tmp_path / "curve.toml"
    space.write_text('lr = {type = "float", low = 1e-3, high = 1e-1, log = true}\n'
                     'width = [32, 64]\nsteps = 30\ndelay = 0.1\n')
    env = {"DBDICT_REPORT_INTERVAL": "0.1", "DBDICT_METRICS_INTERVAL": "0.2"}
    first = workers(pg_url, "first", *FAST, "--slots", "1", env=env)
    driver = _driver(pg_url, tmp_path, tmp_path / "d.log", CURVE, "--space", str(space),
                     "--objective", "loss", "--budget", "2", "--max-pending", "1",
                     "--seed", "4", "--name", "r", "--poll", "0.1")
    store = Store.open(pg_url)
    job_id = wait_for(lambda: next((j for _, j, s, _ in _trials(pg_url, "r")
                                    if s == "RUNNING"), None), 30, "trial 0 running")
    wait_for(lambda: len(store.metric_rows([job_id])) >= 5, 30, "5 steps reported")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    job, _ = store.job(job_id)
    assert job.status.name == "START"  # requeued with its save, still a pending trial
    workers(pg_url, "second", *FAST, "--slots", "1", env=env)
    assert driver.wait(90) == 0, (tmp_path / "d.log").read_text()
    assert "finished: 2 done, 0 failed, 0 pruned of 2" in (tmp_path / "d.log").read_text()
    job, state = store.job(job_id)
    assert job.status.name == "DONE" and job.attempts == 2 and state["steps_run"] == 30
    rows = store.metric_rows([job_id], keys=["loss"])
    by_attempt = {a: sorted(r.step for r in rows if r.attempt == a) for a in (1, 2)}
    assert by_attempt[1] and by_attempt[2]
    # The second attempt starts at the step after the first one's last: one curve, not a
    # restart from step 0 (reports are coalesced, so not every step need be there).
    assert by_attempt[2][0] == by_attempt[1][-1] + 1 > 1
    assert max(by_attempt[2]) == 29
    store.close()
