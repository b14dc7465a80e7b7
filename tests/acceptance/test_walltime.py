"""Walltime-aware workers, with real commands: a worker with a walltime books no more when
less than --min-remaining is left, stops its running job early enough that it is requeued
with its checkpoint, and exits 0 before its walltime; the experiment sees how long it has
(channel.time_left(), $DBDICT_DEADLINE); under SLURM the job's end is the default limit.

The walltimes are seconds, not hours, so that the tests run in seconds: 8s with --grace 2
stops the jobs at 8 - 2 - 1 (the margin, 5% of the walltime but at least 1 s) = 5 s."""
from __future__ import annotations

import sys
import time

from dbdict_worker.constants import Status

TIMED = "dbdict_worker.examples.timed"
#: Not under SLURM, whatever the test runner runs under.
NO_SLURM = {"SLURM_JOB_ID": "", "SLURM_JOB_END_TIME": ""}
#: A command experiment that writes $DBDICT_DEADLINE into its state (no braces: the template
#: would take them for placeholders).
RECORD_DEADLINE = (f"{sys.executable} -c \"import json, os; s = json.load(open('state.json')); "
                   "s['deadline'] = os.environ.get('DBDICT_DEADLINE', 'unset'); "
                   "json.dump(s, open('state.json', 'w'))\"")


def _enqueue(cli, *args: str) -> int:
    (job_id,) = cli.json("dbdict-enqueue", *args, "--json")["created"]
    return job_id


def test_a_worker_books_no_more_then_requeues_its_job_with_its_checkpoint_before_the_end(
        pg_cli, pg_store, pg_url, workers):
    first = _enqueue(pg_cli, TIMED, "total=150", "sleep=0.05")
    w = workers(pg_url, "w", "--walltime", "8s", "--min-remaining", "5s", "--grace", "2",
                "--slots", "2", env=NO_SLURM)
    # Logged as it starts running, just after its walltime starts (the imports before that,
    # seconds on a loaded machine, are not counted).
    w.wait_log("left; booking stops with 5s left", 30)
    started = time.monotonic()
    # With less than 5 s left a free slot books nothing: a job enqueued now stays START.
    w.wait_log("booking no more")
    second = _enqueue(pg_cli, TIMED, "total=3", "sleep=0")
    assert w.wait(30) == 0, w.log()
    elapsed = time.monotonic() - started
    assert elapsed < 8, (elapsed, w.log())  # gone before its walltime ends
    log = w.log()
    assert "walltime: stopping jobs to requeue them before the allocation ends" in log
    job, state = pg_store.job(first)
    # Stopped by its worker: back to START at once, uncounted, with the progress it saved.
    assert job.status == Status.START, (job, log)
    assert (job.attempts, job.restarts, job.not_before) == (1, 0, None)
    assert 0 < state["step"] < 150 and state["starts"] == 1
    # The experiment was told how long it had: to the stop, 5 s after the worker's start.
    assert 2.5 < state["left_at_start"] <= 5.0, state
    assert [e.kind for e in pg_store.events(first)] == ["booked", "requeued"]
    job2, _ = pg_store.job(second)
    assert (job2.status, job2.attempts) == (Status.START, 0)

    # The next allocation resumes it from its checkpoint; without a limit it is told None.
    stopped_at = state["step"]
    w2 = workers(pg_url, "w2", "--until-empty", "--slots", "2", env=NO_SLURM)
    assert w2.wait(60) == 0, w2.log()
    job, state = pg_store.job(first)
    assert job.status == Status.DONE, (job, w2.log())
    assert (state["starts"], state["step_at_start"], state["result"]) == (2, stopped_at, 150)
    assert state["left_at_start"] is None
    assert pg_store.job(second)[0].status == Status.DONE


def test_the_experiment_is_told_its_deadline_and_the_slurm_end_is_honoured(
        pg_cli, pg_store, pg_url, workers):
    python_job = _enqueue(pg_cli, TIMED, "total=2", "sleep=0")
    cmd_job = _enqueue(pg_cli, "--cmd", RECORD_DEADLINE)
    # No --walltime: the SLURM job's end, 60 s from now; --grace 5 and the 3 s margin stop
    # the jobs 52 s from now.
    end = int(time.time()) + 60
    launched = time.time()
    w = workers(pg_url, "w", "--until-empty", "--grace", "5", "--min-remaining", "0",
                env={"SLURM_JOB_ID": "4242", "SLURM_JOB_END_TIME": str(end)})
    assert w.wait(30) == 0, w.log()
    finished = time.time()
    assert "walltime: SLURM job 4242 ends in" in w.log()
    job, state = pg_store.job(python_job)
    assert job.status == Status.DONE, (job, w.log())
    # Told at its start, between the worker's launch and its exit: the stop is at end - 8.
    assert end - 8 - finished <= state["left_at_start"] <= end - 8 - launched
    job, state = pg_store.job(cmd_job)
    assert job.status == Status.DONE, (job, w.log())
    assert end - 8 - 1 <= int(state["deadline"]) <= end - 8  # whole epoch seconds


def test_without_a_limit_time_left_is_none_and_an_unreadable_slurm_end_is_a_warning(
        pg_cli, pg_store, pg_url, workers):
    python_job = _enqueue(pg_cli, TIMED, "total=2", "sleep=0")
    cmd_job = _enqueue(pg_cli, "--cmd", RECORD_DEADLINE)
    # SLURM_JOB_ID without its end time: squeue is asked, and fails (absent here, or the job
    # unknown): a warning, and the worker runs without a limit.
    w = workers(pg_url, "w", "--until-empty",
                env={"SLURM_JOB_ID": "999999999", "SLURM_JOB_END_TIME": ""})
    assert w.wait(30) == 0, w.log()
    assert "cannot read the end of SLURM job 999999999" in w.log()
    assert "booking stops with" not in w.log()  # no limit announced
    assert pg_store.job(python_job)[1]["left_at_start"] is None
    assert pg_store.job(cmd_job)[1]["deadline"] == "unset"


def test_a_job_timeout_is_its_deadline_when_it_comes_first(pg_store, pg_url, workers):
    (job_id,) = pg_store.enqueue(TIMED, [{"total": 2, "sleep": 0}],
                                 policy={"timeout": 600}).created
    w = workers(pg_url, "w", "--until-empty", "--walltime", "1h", env=NO_SLURM)
    assert w.wait(30) == 0, w.log()
    job, state = pg_store.job(job_id)
    assert job.status == Status.DONE, (job, w.log())
    assert 590 < state["left_at_start"] <= 600


def test_walltime_options_are_checked_and_named_in_help(pg_cli):
    bad = pg_cli("dbdict-worker", "start", "--walltime", "soon", ok=False)
    assert bad.returncode == 2 and "--walltime" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    bad = pg_cli("dbdict-worker", "start", "--walltime", "1h", "--min-remaining", "x",
                 ok=False)
    assert bad.returncode == 2 and "--min-remaining" in bad.stderr
    shown = pg_cli("dbdict-worker", "start", "--help").stdout
    assert "DBDICT_WALLTIME" in shown and "DBDICT_MIN_REMAINING" in shown
