"""Rough edges of the worker (issue 11, item 7), with real workers, kill -9 and real jobs:
killed workers shown as lost and not drained, scratch directories of killed workers removed
by the next one, and an experiment that closes every descriptor before returning COMPLETE."""
from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

from dbdict_worker.constants import Status
from dbdict_worker.job.scratch import JOB_PID_FILE
from tests.acceptance.conftest import Cli
from tests.acceptance.workers import alive
from tests.support.waiting import wait_for

FAST = ("--heartbeat", "0.3", "--lease", "3", "--poll-interval", "0.2")

#: Writes where its scratch directory is, then runs until asked to stop (INCOMPLETE).
WAITER = """
import os, time

def experiment(state, channel):
    with open("tempdir.txt", "w") as f:
        f.write(os.environ["DBDICT_EXPERIMENT_TEMPDIR"])
    while channel.switch() != "stop":
        time.sleep(0.05)
    return True
"""

#: Saves its result, closes every descriptor (its socket to the worker too), returns COMPLETE.
CLOSER = """
import os

def experiment(state, channel):
    state.result = state.x * 2
    channel.save()
    os.closerange(0, 1024)
    return None
"""


def code_dir(tmp_path: Path, **modules: str) -> dict[str, str]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    for name, text in modules.items():
        (code / f"{name}.py").write_text(textwrap.dedent(text))
    return {"PYTHONPATH": str(code)}


def worker_status(cli: Cli, *args: str) -> dict[int, dict]:
    """``dbdict-worker status --json``'s workers, by pid."""
    out = json.loads(cli("dbdict-worker", "status", "--json", *args).stdout)
    return {w["pid"]: w for w in out["workers"]}


def test_a_killed_worker_is_lost_in_status_and_not_drained(pg_url, tmp_path, workers):
    cli = Cli(pg_url, tmp_path)
    a = workers(pg_url, "a", *FAST)
    b = workers(pg_url, "b", *FAST)
    seen = wait_for(lambda: (lambda s: s if {a.pid, b.pid} <= set(s) else None)(
        worker_status(cli)), 60, "both workers registered")
    a_id, b_id = seen[a.pid]["id"], seen[b.pid]["id"]
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    # Past the lease given to status (the workers' --lease 3), a is lost; b beats on.
    now = wait_for(lambda: (lambda s: s if s[a.pid]["state"] == "lost" else None)(
        worker_status(cli, "--lease", "3")), 30, "the killed worker shown as lost")
    assert now[b.pid]["state"] == "running"
    text = cli("dbdict-worker", "status", "--lease", "3").stdout
    (line,) = [ln for ln in text.splitlines() if ln.startswith(a_id[:36])]
    assert " lost " in line
    # With the default lease (60 s) it is not lost yet: the rule is the lease, documented.
    assert worker_status(cli)[a.pid]["state"] == "running"
    out = cli("dbdict-worker", "drain", "--all", "--lease", "3").stdout.strip()
    assert out == (f"draining 1 worker(s): {b_id}; 1 lost worker(s) skipped (no heartbeat "
                   f"for over 3s): {a_id}")
    assert b.wait(60) == 0
    rows = worker_status(cli, "--all", "--lease", "3")
    assert rows[a.pid]["drain_requested"] is False and rows[b.pid]["state"] == "stopped"
    # DBDICT_LEASE is read by status too (the variable the workers read).
    env_rows = json.loads(cli("dbdict-worker", "status", "--json",
                              env={"DBDICT_LEASE": "3"}).stdout)["workers"]
    assert [w["state"] for w in env_rows if w["pid"] == a.pid] == ["lost"]


def _tempdir_of(tmp_path: Path, table: str) -> Path:
    found = list(tmp_path.glob(f"dbdict-jobs/*/{table}/*/tempdir.txt"))
    return Path(found[0].read_text()) if found and found[0].read_text() else None


def test_the_next_worker_removes_the_scratch_dirs_of_a_killed_one(pg_store, pg_url, tmp_path,
                                                                  workers):
    env = {**code_dir(tmp_path, waiter=WAITER), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    pg_store.enqueue("waiter.experiment", [{"who": "live"}], table="tc")
    pg_store.enqueue("waiter.experiment", [{"who": "killed"}], table="ta")
    live = workers(pg_url, "live", *FAST, "--table", "tc", env=env)
    doomed = workers(pg_url, "doomed", *FAST, "--table", "ta", env=env)
    live_dir = wait_for(lambda: _tempdir_of(tmp_path, "tc"), 60, "the live job's tempdir")
    dead_dir = wait_for(lambda: _tempdir_of(tmp_path, "ta"), 60, "the doomed job's tempdir")
    # Each private directory is named for the worker that made it.
    assert dead_dir.parent.name.startswith(f"dbdict-job-{doomed.pid}.")
    assert live_dir.parent.name.startswith(f"dbdict-job-{live.pid}.")
    job_pid = int((dead_dir.parent / JOB_PID_FILE).read_text().split()[0])
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    # Orphaned, the job stops on its own (asked to stop; killed at its lease's end at most).
    wait_for(lambda: not alive(job_pid), 30, "the orphaned job to end")
    assert dead_dir.parent.is_dir()  # leaked: nobody was left to remove it
    cleaner = workers(pg_url, "cleaner", *FAST, "--table", "tb", "--until-empty", env=env)
    assert cleaner.wait(60) == 0
    assert not dead_dir.parent.exists()
    assert live_dir.is_dir() and live.proc.poll() is None  # a live worker's job: untouched
    assert "removed 1 job scratch directory" in cleaner.log()
    live.signal(signal.SIGTERM)
    assert live.wait(60) == 0
    assert not live_dir.parent.exists()  # removed by its own worker at the job's end
    assert list((tmp_path / "tmp").glob("dbdict-job-*")) == []


def test_closing_every_descriptor_after_the_final_save_is_done(pg_store, pg_url, tmp_path,
                                                               workers):
    env = code_dir(tmp_path, closer=CLOSER)
    (job_id,) = pg_store.enqueue("closer.experiment", [{"x": 21}]).created
    w = workers(pg_url, "w", *FAST, "--until-empty", env=env)
    assert w.wait(60) == 0
    job, state = pg_store.job(job_id)
    assert (job.status, job.error, state["result"]) == (Status.DONE, None, 42), w.log()
    # And with `dbdict run`, from the directory that holds the module.
    cli = Cli(pg_url, tmp_path / "code")
    proc = cli("dbdict", "run", "closer.experiment", "x=5", "--workdir", str(tmp_path / "run"))
    assert "COMPLETE" in proc.stderr
    assert "dbdict.status = 'DONE'" in (tmp_path / "run" / "current.conf").read_text()
    assert "result = 10" in (tmp_path / "run" / "current.conf").read_text()
