"""Intermediate metrics and pruning with real ``dbdict-worker start`` processes on PostgreSQL:
reports reach the ``metrics`` table in batches (and the writes they cost), a resumed job's
curve continues, and a search's prune reaches the experiment (or stops one that never asks),
ending the job PRUNED with its state and files kept."""
from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from dbdict_worker.constants import Status
from dbdict_worker.job.workdir import STATUS_KEY, Workdir
from tests.acceptance.conftest import BIN
from tests.support.waiting import wait_for

CODE = '''
import os, time
from dbdict_worker import COMPLETE, INCOMPLETE


def curve(state, channel):
    """Reports its loss every ``every`` seconds; resumes from its saved step."""
    step = state.get("step", 0)
    while step < state["steps"]:
        step += 1
        channel.report(step, loss=1.0 / step, lr=state.get("lr", 0.1))
        state["step"] = step
        with open("checkpoint.txt", "w") as f:
            f.write(str(step))
        answer = channel.save_and_switch()
        if answer == "prune":
            with open("pruned.txt", "w") as f:
                f.write(str(step))
            return COMPLETE   # whatever it returns: the job ends PRUNED
        if answer == "stop":
            return INCOMPLETE
        time.sleep(state["every"])


def deaf(state, channel):
    """Never looks at its channel."""
    open("started.txt", "w").close()
    while True:
        time.sleep(0.05)
'''

FAST = ("--heartbeat", "0.5", "--lease", "5")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "mexp.py").write_text(CODE)
    return {"PYTHONPATH": str(code), **extra}


def _status(store, job_id: int) -> Status:
    return store.job(job_id)[0].status


def _workdir(tmp_path: Path, store, job_id: int) -> Path:
    return Path(store.job(job_id)[0].workdir)


COUNTERS = """
CREATE TABLE metric_writes (statements bigint NOT NULL);
INSERT INTO metric_writes VALUES (0);
CREATE FUNCTION count_metric_statement() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN UPDATE metric_writes SET statements = statements + 1; RETURN NULL; END $$;
CREATE TRIGGER metric_statements AFTER INSERT ON metrics
  FOR EACH STATEMENT EXECUTE FUNCTION count_metric_statement();
"""


def _statements(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT statements FROM metric_writes")).scalar()


def test_reports_every_10ms_reach_the_table_in_a_few_statements_a_second(
        pg_store, pg_url, tmp_path, workers):
    # Each statement writing the metrics table is counted by a trigger of this database.
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql(COUNTERS)
    n, steps, every = 20, 500, 0.01   # about 6 s of reports every 10 ms per job
    ids = pg_store.enqueue("mexp.curve", [{"steps": steps, "every": every, "i": i}
                                          for i in range(n)]).created
    env = _env(tmp_path)
    ws = [workers(pg_url, f"w{k}", *FAST, "--slots", str(n // 2), "--until-empty", env=env)
          for k in range(2)]
    wait_for(lambda: pg_store.counts().get(("default", Status.RUNNING)) == n, 60,
             "every job running")
    started = time.monotonic()
    wait_for(lambda: pg_store.metric_rows(ids), 20, "reports written while they run")
    for w in ws:
        assert w.wait(120) == 0, w.log()
    elapsed = time.monotonic() - started
    assert {_status(pg_store, i) for i in ids} == {Status.DONE}
    statements = _statements(pg_store)
    rows = pg_store.metric_rows(ids)
    # The whole curve is there once the job is DONE: its last step, for both keys.
    for job_id in ids:
        last = [r for r in rows if r.job_id == job_id and r.step == steps]
        assert {r.key for r in last} == {"loss", "lr"}, job_id
    per_second = statements / elapsed
    per_job_second = per_second / n
    # 20 jobs reporting 100 times a second each: a few statements a second in all (one
    # batch per worker every 2 s, and one per ending job), not 2,000.
    print(f"\nmetrics writes: {statements} statements in {elapsed:.1f} s for {n} jobs "
          f"reporting every {every * 1000:.0f} ms: {per_second:.2f}/s "
          f"({per_job_second * 100:.1f}/s per 100 jobs), {len(rows)} rows")
    assert per_job_second * 100 < 50, (statements, elapsed)
    assert statements >= 2  # in batches while running, not only at the end


def test_a_resumed_job_continues_its_curve(pg_store, pg_url, tmp_path, workers):
    (job_id,) = pg_store.enqueue("mexp.curve", [{"steps": 150, "every": 0.02}]).created
    env = _env(tmp_path)
    first = workers(pg_url, "first", *FAST, "--grace", "10", env=env)
    wait_for(lambda: any(r.step >= 30 for r in pg_store.metric_rows([job_id])), 30,
             "the first attempt's reports")
    first.signal()
    assert first.wait(30) == 0, first.log()
    job, state = pg_store.job(job_id)
    assert job.status == Status.START and 30 <= state["step"] < 150
    second = workers(pg_url, "second", *FAST, "--until-empty", env=env)
    assert second.wait(60) == 0, second.log()
    assert _status(pg_store, job_id) == Status.DONE
    rows = [r for r in pg_store.metric_rows([job_id], keys=["loss"])]
    one = [r.step for r in rows if r.attempt == 1]
    two = [r.step for r in rows if r.attempt == 2]
    assert one and two
    # No gap, no overlap: the second attempt's first report is the step after the first
    # attempt's last (the one saved at its stop), and the curve ends at the last step.
    assert max(one) == state["step"] and min(two) == state["step"] + 1
    assert max(two) == 150
    steps = one + two
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_a_prune_reaches_the_experiment_which_returns_and_ends_pruned_with_its_files(
        pg_store, pg_url, tmp_path, workers):
    (job_id, other) = pg_store.enqueue("mexp.curve", [{"steps": 100000, "every": 0.02},
                                                      {"steps": 20, "every": 0.01}]).created
    w = workers(pg_url, "w", *FAST, "--slots", "2", "--until-empty", env=_env(tmp_path))
    wait_for(lambda: any(r.step >= 10 for r in pg_store.metric_rows([job_id])), 30,
             "reports")
    asked = time.monotonic()
    assert pg_store.request_prune([job_id], reason="median pruner") == [job_id]
    wait_for(lambda: _status(pg_store, job_id) == Status.PRUNED, 20, "the job PRUNED")
    took = time.monotonic() - asked
    assert w.wait(30) == 0, w.log()
    job, state = pg_store.job(job_id)
    workdir = _workdir(tmp_path, pg_store, job_id)
    # It saw 'prune' at its channel and returned: its state and files as it left them.
    assert (workdir / "pruned.txt").read_text() == str(state["step"])
    assert (workdir / "checkpoint.txt").read_text() == str(state["step"])
    current = Workdir(workdir).read_current()
    assert current[STATUS_KEY] == "PRUNED" and current["step"] == state["step"]
    assert job.error is None and job.attempts == 1 and took < 10
    assert max(r.step for r in pg_store.metric_rows([job_id])) == state["step"]
    assert _status(pg_store, other) == Status.DONE
    kinds = [e.kind for e in pg_store.events(job_id)]
    assert "prune" in kinds and kinds[-1] == "finished"


def test_an_experiment_that_never_asks_is_stopped_and_still_ends_pruned(
        pg_store, pg_url, tmp_path, workers):
    (job_id,) = pg_store.enqueue("mexp.deaf", [{"i": 1}]).created
    w = workers(pg_url, "w", *FAST, "--grace", "1", "--until-empty", env=_env(tmp_path))
    wait_for(lambda: _status(pg_store, job_id) == Status.RUNNING, 30, "running")
    assert pg_store.request_prune([job_id]) == [job_id]
    # The prune wait (5 s), SIGTERM, the grace (1 s), SIGKILL: PRUNED, not requeued.
    wait_for(lambda: _status(pg_store, job_id) == Status.PRUNED, 30, "the job PRUNED")
    assert w.wait(30) == 0, w.log()
    job, _ = pg_store.job(job_id)
    assert job.attempts == 1 and job.error is None
    assert (_workdir(tmp_path, pg_store, job_id) / "started.txt").exists()
    assert "pruning job process" in w.log()


def test_a_queued_job_pruned_ends_pruned_at_once_and_is_never_booked(
        pg_store, pg_url, tmp_path, workers):
    pruned, kept = pg_store.enqueue("mexp.curve", [{"steps": 3, "every": 0.01, "i": i}
                                                   for i in range(2)]).created
    assert pg_store.request_prune([pruned]) == [pruned]
    assert _status(pg_store, pruned) == Status.PRUNED
    w = workers(pg_url, "w", *FAST, "--until-empty", env=_env(tmp_path))
    assert w.wait(60) == 0, w.log()
    assert _status(pg_store, kept) == Status.DONE
    job, _ = pg_store.job(pruned)
    assert job.status == Status.PRUNED and job.attempts == 0
    assert pg_store.metric_rows([pruned]) == []


def test_dbdict_run_writes_reports_to_metrics_csv_and_never_prunes(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBDICT_")}
    env.update(_env(tmp_path), DBDICT_REPORT_INTERVAL="0")
    done = subprocess.run([str(BIN / "dbdict"), "run", "mexp.curve", "steps=5", "every=0",
                           "--workdir", "wd"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "wd" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "key", "value"]
    assert [r for r in rows[1:] if r[1] == "loss"] == [
        [str(s), "loss", repr(1.0 / s)] for s in range(1, 6)]


REPORTING_CMD = ("sh -c 'for i in 1 2 3; do echo \"$i loss=0.$i acc=$i\" >> "
                 "\"$DBDICT_METRICS_FILE\"; sleep 0.1; done; echo not a report >> "
                 "\"$DBDICT_METRICS_FILE\"'")


def test_a_command_experiment_reports_by_appending_lines_to_its_metrics_file(
        pg_store, pg_url, pg_cli, tmp_path, workers):
    enqueued = pg_cli("dbdict-enqueue", "--cmd", REPORTING_CMD, "x=1")
    assert enqueued.returncode == 0, enqueued.stderr
    (job,) = pg_store.jobs()
    w = workers(pg_url, "w", *FAST, "--until-empty", env={"DBDICT_REPORT_INTERVAL": "0"})
    assert w.wait(60) == 0, w.log()
    assert _status(pg_store, job.id) == Status.DONE
    got = [(r.step, r.key, r.value) for r in pg_store.metric_rows([job.id])]
    assert got == [(s, k, v) for s in (1, 2, 3)
                   for k, v in sorted({"acc": float(s), "loss": s / 10}.items())]
    # The malformed line is skipped and named on the job's stderr.
    assert "malformed line of metrics.log" in (Path(pg_store.job(job.id)[0].workdir)
                                               / "stderr").read_text()
