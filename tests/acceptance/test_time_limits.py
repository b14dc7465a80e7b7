"""Time limits with real commands: a hung experiment is stopped after --stall-after, retried,
and ends ERR_RUN "stalled ..."; a job past --timeout that saves and handles SIGTERM returns
INCOMPLETE but ends ERR_RUN "timeout after 2s" with its state kept (and a retry resumes from
it); a job busy on the CPU without output is not stalled."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dbdict_worker.constants import Status

STALLED = "stalled: no save, output or CPU time for 2s"


def _enqueue(cli, *args: str) -> int:
    (job_id,) = cli.json("dbdict-enqueue", *args, "--json")["created"]
    return job_id


def test_a_hung_job_is_stopped_retried_and_ends_stalled(pg_cli, pg_store, pg_url, workers):
    job_id = _enqueue(pg_cli, "dbdict_worker.examples.hang", "--stall-after", "2s",
                      "--retries", "1", "--retry-on", "timeout", "--retry-delay", "0.2s")
    # The hang ignores SIGTERM: each attempt ends by SIGKILL after the grace period.
    w = workers(pg_url, "w", "--until-empty", "--grace", "1")
    assert w.wait(60) == 0, w.log()
    job = pg_store.job(job_id)[0]
    assert (job.status, job.error, job.attempts, job.retried) == \
        (Status.ERR_RUN, STALLED, 2, 1), w.log()
    (retry,) = [e for e in pg_store.events(job_id) if e.kind == "retry"]
    assert f"attempt 1 ended ERR_RUN: {STALLED}; retry 1 of 1 (on timeout)" in retry.detail
    # Each attempt was stopped in about its limit plus the grace, not left to hang.
    booked = [e.at for e in pg_store.events(job_id) if e.kind == "booked"]
    assert (retry.at - booked[0]).total_seconds() < 10
    shown = pg_cli("dbdict", "show", str(job_id)).stdout
    assert "time limits: stall after 2s per attempt" in shown
    assert f"ERR_RUN: {STALLED}; retry 1 of 1" in shown and "finished" in shown, shown
    assert f"dbdict.error = {STALLED!r}" in shown


def test_a_timeout_keeps_the_saved_state_and_a_retry_resumes_from_it(cli, store, db_url,
                                                                    workers):
    # Steps of 0.05 s, each saved; on SIGTERM it returns INCOMPLETE at once.
    job_id = _enqueue(cli, "dbdict_worker.examples.checkpoint", "total=100000", "sleep=0.05",
                      "--timeout", "2s", "--retries", "1", "--retry-on", "timeout",
                      "--retry-delay", "0.1s")
    w = workers(db_url, "w", "--until-empty", "--grace", "20")
    assert w.wait(60) == 0, w.log()
    job, state = store.job(job_id)
    assert (job.status, job.error, job.attempts, job.retried) == \
        (Status.ERR_RUN, "timeout after 2s", 2, 1), w.log()
    assert "did not stop within the grace period" not in w.log()  # it returned by itself
    assert state["step"] > 0 and "result" not in state
    (retry,) = [e for e in store.events(job_id) if e.kind == "retry"]
    assert "attempt 1 ended ERR_RUN: timeout after 2s; retry 1 of 1" in retry.detail
    # The second attempt started from the first one's saved step, with its checkpoint file.
    starts = (Path(job.workdir) / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and starts[0].startswith("start at step 0 ")
    resumed = int(starts[1].split()[3])
    assert 0 < resumed < state["step"], (starts, state)
    current = (Path(job.workdir) / "current.conf").read_text()
    assert "dbdict.status = 'ERR_RUN'" in current and "timeout after 2s" in current


def test_a_timeout_without_retries_is_final(pg_cli, pg_store, pg_url, workers):
    job_id = _enqueue(pg_cli, "dbdict_worker.examples.checkpoint", "total=100000",
                      "sleep=0.05", "--timeout", "1s")
    w = workers(pg_url, "w", "--until-empty", "--grace", "20")
    assert w.wait(60) == 0, w.log()
    job, state = pg_store.job(job_id)
    assert (job.status, job.error, job.attempts) == (Status.ERR_RUN, "timeout after 1s", 1)
    assert state["step"] > 0
    assert [e.kind for e in pg_store.events(job_id)] == ["booked", "finished"]


def test_busy_on_the_cpu_without_output_is_not_stalled(pg_cli, pg_store, pg_url, workers):
    busy = _enqueue(pg_cli, "dbdict_worker.examples.spin", "seconds=4", "--stall-after", "1s")
    # A job that sleeps a little less than its limit, then completes, is not stalled either.
    slow = _enqueue(pg_cli, "dbdict_worker.examples.hang", "forever=False", "seconds=0.5",
                    "--stall-after", "2s", "--timeout", "1m")
    w = workers(pg_url, "w", "--until-empty", "--slots", "2", "--grace", "1")
    assert w.wait(60) == 0, w.log()
    for job_id in (busy, slow):
        job = pg_store.job(job_id)[0]
        assert (job.status, job.error, job.attempts) == (Status.DONE, None, 1), w.log()
    assert pg_store.job(busy)[1]["result"] > 0
    assert "stopping it" not in w.log()


def test_dbdict_run_takes_a_timeout_too(tmp_path):
    workdir = tmp_path / "wd"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dbdict"), "run", "dbdict_worker.examples.checkpoint",
         "total=100000", "sleep=0.05", "--timeout", "1s", "-w", str(workdir)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "ERR_RUN: timeout after 1s" in proc.stderr
    current = (workdir / "current.conf").read_text()
    assert "dbdict.status = 'ERR_RUN'" in current and "step = 0" not in current
