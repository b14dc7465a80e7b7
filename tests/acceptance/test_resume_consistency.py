"""A worker killed with SIGKILL between a checkpoint write and its save: the job resumed by
another worker starts from a state and files saved at the same moment, and ends DONE with
exactly the result of an uninterrupted run (with an exproot, and with the job's directory on
the worker's own disk). The checkpoint example raises when its state and files disagree."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from dbdict_worker.constants import Status
from dbdict_worker.state import read_conf
from tests.support.waiting import wait_for

CHECKPOINT = "dbdict_worker.examples.checkpoint"
# A short lease, so that the next worker rescues the dead one's job within seconds.
FAST = ("--heartbeat", "0.3", "--lease", "2", "--poll-interval", "0.2")
TOTAL = 40
# Two: a third loss would end the job (a job that keeps losing its worker is failed).
KILLS = 2


def checkpoint_step(live: Path) -> int:
    """The step of the checkpoint in a running job's copy (0 before the first)."""
    try:
        return json.loads((live / "weights.json").read_text())["step"]
    except (FileNotFoundError, ValueError):
        return 0


def kill_worker_and_job(worker, live: Path) -> None:
    """SIGKILL the worker and its job's whole process group, as a machine dying does."""
    pid = int((live / "starts.log").read_text().splitlines()[-1].split("pid ")[1])
    os.kill(worker.pid, signal.SIGKILL)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(10)


@pytest.mark.parametrize("mode", ["exproot", "local"])
def test_a_job_killed_between_checkpoint_and_save_resumes_with_its_files(
        mode, pg_store, pg_url, tmp_path, workers):
    base = tmp_path / "base"
    args = [*FAST, "--workdir-base", str(base)]
    if mode == "exproot":
        (tmp_path / "exproot").mkdir()  # a worker never creates a missing (unmounted) root
        args += ["--exproot", str(tmp_path / "exproot")]
    # Each step writes its checkpoint, then takes 0.1 s before its save: a kill at a random
    # moment lands between the two most of the time. The push interval stays the default
    # (60 s), so the database's step runs well ahead of the last pushed checkpoint.
    (job_id,) = pg_store.enqueue(CHECKPOINT, [{"total": TOTAL, "sleep": 0.1}]).created
    for attempt in range(1, KILLS + 1):
        worker = workers(pg_url, f"w{attempt}", *args)
        live = wait_for(lambda: next(base.glob(f"*/default/{job_id}.{attempt}"), None), 60,
                        f"the job's copy of attempt {attempt}")
        wait_for(lambda: (live / "starts.log").exists(), 30, "the experiment started")
        started = int((live / "starts.log").read_text().splitlines()[-1].split()[3])
        # A different moment each time: 2, then 3 checkpoints into the attempt.
        wait_for(lambda: checkpoint_step(live) >= started + 1 + attempt, 30, "checkpoints")
        kill_worker_and_job(worker, live)
    last = workers(pg_url, "last", *args, "--until-empty")
    assert last.wait(120) == 0, last.log()
    job, state = pg_store.job(job_id)
    assert job.status == Status.DONE, (state.get("dbdict.error"), last.log())
    assert state["result"] == TOTAL * (TOTAL + 1) // 2 and state["step"] == TOTAL
    home = Path(job.workdir)  # the exproot's copy, or the worker's own for good
    assert read_conf(home / "current.conf")["result"] == state["result"]
    lines = (home / "starts.log").read_text().splitlines()
    assert len(lines) == KILLS + 1, lines
    # The first run pushed its first save at once and the database went on without the
    # exproot: the resumes started from steps the files were saved with, behind the kills.
    assert lines[0].startswith("start at step 0 ")
