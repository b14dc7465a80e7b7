"""Restarts are bounded, with real commands: a job that returns INCOMPLETE without saving
progress comes back after a growing delay and ends ERR_RUN past its --max-restarts, while an
--until-empty worker waits for it and then exits; progress, and a stopping worker, do not
count."""
from __future__ import annotations

import json
import re
import signal
import time

from dbdict_worker.constants import Status
from dbdict_worker.store import Store
from dbdict_worker.worker.restarts import DELAY_BASE_ENV, JITTER
from tests.support.waiting import wait_for

NEVER_DONE = "dbdict_worker.examples.never_done"
BASE = 0.2
FAST = {DELAY_BASE_ENV: str(BASE)}
DELAY = re.compile(r"not before now \+ ([0-9.e+-]+) s")


def _enqueue(cli, *args: str) -> int:
    (job_id,) = cli.json("dbdict-enqueue", NEVER_DONE, *args, "--json")["created"]
    return job_id


def test_incomplete_without_progress_backs_off_then_ends_err_run(pg_cli, pg_store, pg_url,
                                                                 workers):
    job_id = _enqueue(pg_cli, "--max-restarts", "3")
    started = time.monotonic()
    w = workers(pg_url, "w", "--until-empty", env=FAST)
    # With LISTEN the worker polls every 30 s: it exits this soon only by booking each
    # delayed comeback when it is due, and it exits only once the job has ended.
    assert w.wait(60) == 0, w.log()
    assert time.monotonic() - started < 30, w.log()
    job = pg_store.job(job_id)[0]
    assert job.status == Status.ERR_RUN, (job, w.log())
    assert job.error == ("returned INCOMPLETE 4 times in a row without saving progress "
                         "(max_restarts 3)")
    assert (job.attempts, job.restarts, job.max_restarts) == (4, 3, 3)
    events = pg_store.events(job_id)
    assert [e.kind for e in events] == ["booked", "requeued"] * 3 + ["booked", "finished"]
    requeues = [e for e in events if e.kind == "requeued"]
    delays = [float(DELAY.search(e.detail).group(1)) for e in requeues]
    for n, delay in enumerate(delays):
        assert BASE * 2 ** n * (1 - JITTER) <= delay <= BASE * 2 ** n * (1 + JITTER), delays
    assert delays == sorted(delays) and len(set(delays)) == 3  # each longer than the last
    assert [f"restart {n} of at most 3" in e.detail for n, e in enumerate(requeues, 1)] == \
        [True] * 3
    # Each comeback was booked no sooner than its delay allowed (database clock; the delays
    # are shown to 3 digits).
    booked = [e for e in events if e.kind == "booked"]
    for requeue, delay, next_booking in zip(requeues, delays, booked[1:]):
        assert (next_booking.at - requeue.at).total_seconds() >= delay * 0.995
    shown = pg_cli("dbdict", "show", str(job_id)).stdout
    assert "restarts: 3 INCOMPLETE in a row without new progress (at most 3)" in shown
    record = json.loads(pg_cli("dbdict", "show", str(job_id), "--json").stdout)
    assert (record["restarts"], record["max_restarts"], record["not_before"]) == (3, 3, None)


def test_incomplete_with_new_progress_is_not_bounded(pg_cli, pg_store, pg_url, workers):
    # No restart without progress allowed at all: each run saves progress, so none counts.
    job_id = _enqueue(pg_cli, "runs=4", "--max-restarts", "0")
    w = workers(pg_url, "w", "--until-empty", env=FAST)
    assert w.wait(60) == 0, w.log()
    job, state = pg_store.job(job_id)
    assert job.status == Status.DONE, (job, w.log())
    assert state["done"] == 4 and job.attempts == 4 and job.restarts == 0
    requeues = [e.detail for e in pg_store.events(job_id) if e.kind == "requeued"]
    assert len(requeues) == 3 and not any(DELAY.search(d) for d in requeues), requeues


def test_a_waiting_job_shows_its_time_and_an_until_empty_worker_waits_for_it(
        pg_cli, pg_store, pg_url, workers):
    job_id = _enqueue(pg_cli, "--max-restarts", "1")
    # A long first delay (6.4 s at least): the job waits while the test looks.
    w = workers(pg_url, "w", "--until-empty", env={DELAY_BASE_ENV: "8"})
    wait_for(lambda: pg_store.job(job_id)[0].not_before is not None, 30,
             "the job to wait out its delay")
    shown = pg_cli("dbdict", "show", str(job_id)).stdout
    assert "not before: " in shown and "restarts: 1 " in shown, shown
    assert w.proc.poll() is None, w.log()  # the queue is not empty: a job waits
    assert w.wait(60) == 0, w.log()
    assert pg_store.job(job_id)[0].status == Status.ERR_RUN


def test_a_stopping_worker_does_not_count(pg_cli, pg_store: Store, pg_url, workers):
    job_id = _enqueue(pg_cli, "until_stopped=True", "--max-restarts", "0")
    w = workers(pg_url, "w", env=FAST)
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.RUNNING, 30, "the job to run")
    w.wait_log(f"job {job_id} booked")
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.log()
    job = pg_store.job(job_id)[0]
    assert (job.status, job.restarts, job.not_before) == (Status.START, 0, None), w.log()
