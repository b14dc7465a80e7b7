"""A worker writes a job's copy in the exproot only while the job's lease holds: once it has
lapsed (the worker was frozen, or cut off from the database), another worker may have rescued
the job and be pulling that copy, and a push then could leave it with the state of one save
point and the files of another. The final push waits for a renewal, and writes nothing if the
job was taken away or the worker is leaving."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from dbdict_worker.constants import Status
from dbdict_worker.job.jobrun import JobRun, RunResult
from dbdict_worker.job.process import JobProcess, JobSpec
from dbdict_worker.job.sync import ExpRoot, SyncConfig, Syncer
from dbdict_worker.state import read_conf
from tests.support.waiting import wait_for

EX = "dbdict_worker.examples."


def _lapse(proc: JobProcess) -> None:
    # The worker's view of the lease only: the child keeps running (no watchdog message).
    proc.renewed_until = time.monotonic() - 1.0


def _start(tmp_path: Path) -> tuple[JobRun, list[RunResult], threading.Thread, Path]:
    root = tmp_path / "exproot"
    root.mkdir()
    syncer = Syncer(ExpRoot.parse(str(root)).job("db", "t", 1), tmp_path / "w",
                    SyncConfig(attempts=1))
    run = JobRun(JobSpec(EX + "add", {"first": 1, "second": 2}, workdir=tmp_path / "w"),
                 syncer=syncer, on_start=_lapse)
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(run.run()), daemon=True)
    thread.start()
    wait_for(lambda: run.process is not None and run.process.outcome is not None, 30,
             "the job's process to end")
    return run, results, thread, root / "db" / "t" / "1"


def test_the_final_push_waits_for_the_lease_to_be_renewed(tmp_path):
    run, results, thread, copy = _start(tmp_path)
    assert run.process.outcome.status == Status.DONE
    thread.join(1.0)
    assert thread.is_alive(), "the run pushed although its lease had lapsed"
    assert not (copy / "current.conf").exists()
    run.process.renew(time.monotonic() + 60)
    thread.join(30)
    assert results and results[0].pushed is True
    assert read_conf(copy / "current.conf")["dbdict.status"] == "DONE"


def test_a_job_taken_away_while_its_lease_lapsed_writes_nothing(tmp_path):
    run, results, thread, copy = _start(tmp_path)
    run.abandon()
    thread.join(30)
    assert results and results[0].pushed is False
    assert not (copy / "current.conf").exists()


def test_a_leaving_worker_with_a_lapsed_lease_writes_nothing(tmp_path):
    run, results, thread, copy = _start(tmp_path)
    run.request_stop()
    thread.join(30)
    assert results and results[0].pushed is False and run.abandoned
    assert not (copy / "current.conf").exists()
