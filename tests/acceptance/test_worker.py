"""The worker daemon on a real PostgreSQL, with real processes, signals and rsync: booking,
saves, stops, requeue, rescue, exproot sync."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.store import Store
from tests.acceptance.workers import alive
from tests.support.waiting import wait_for

LOOP = "dbdict_worker.examples.loop"


def starts(exproot: Path, job_id: int, table: str = "default") -> list[str]:
    """The lines of the loop example's starts.log in the job's exproot directory."""
    found = list(exproot.glob(f"*/{table}/{job_id}/starts.log"))
    return found[0].read_text().splitlines() if found else []


def step_of(store: Store, job_id: int) -> int:
    return store.job(job_id)[1].get("step", 0)


def total(n: int) -> int:
    return n * (n + 1) // 2


@pytest.mark.slow
def test_two_workers_run_two_hundred_jobs_each_once(pg_store, pg_url, tmp_path, workers):
    exproot = tmp_path / "exproot"
    exproot.mkdir()  # a worker never creates a missing root: it may be an unmounted disk
    ids = pg_store.enqueue(LOOP, [{"total": 10 + i % 7, "i": i} for i in range(200)]).created
    a = workers(pg_url, "a", "--slots", "2", "--until-empty", "--exproot", str(exproot))
    b = workers(pg_url, "b", "--slots", "2", "--until-empty", "--exproot", str(exproot))
    assert a.wait(240) == 0 and b.wait(240) == 0
    jobs = pg_store.jobs_with_state()
    assert {j.status for j, _ in jobs} == {Status.DONE}
    for job, state in jobs:
        assert state["result"] == total(state["total"]), job.id
        assert len(starts(exproot, job.id)) == 1, job.id  # started exactly once
        assert job.workdir == str(next(exproot.glob(f"*/default/{job.id}")))
    for job, _ in jobs:  # booked once, finished once, nothing else
        assert job.attempts == 1, job.id
        assert [e.kind for e in pg_store.events(job.id)] == ["booked", "finished"], job.id
    # Both workers took part: each job was booked by one of the two, and each booked some.
    booked = [{int(i) for i in re.findall(r"\bjob (\d+) booked \(attempt 1\)", w.log())}
              for w in (a, b)]
    assert booked[0] and booked[1] and not booked[0] & booked[1]
    assert booked[0] | booked[1] == set(ids)
    by_id: dict[str, set[int]] = {}
    for job, _ in jobs:
        by_id.setdefault(job.worker_id, set()).add(job.id)
    assert sorted(map(sorted, by_id.values())) == sorted(map(sorted, booked))  # = the logs
    by_worker = {j.host for j, _ in jobs}
    assert len(by_worker) == 1  # one host, two workers: the split shows in the events
    assert set(ids) == {j.id for j, _ in jobs}


def test_sigterm_requeues_with_saved_step_and_another_worker_resumes(
        pg_store, pg_url, tmp_path, workers):
    exproot = tmp_path / "exproot"
    exproot.mkdir()  # a worker never creates a missing root: it may be an unmounted disk
    (job_id,) = pg_store.enqueue(LOOP, [{"total": 300, "sleep": 0.02}]).created
    a = workers(pg_url, "a", "--exproot", str(exproot), "--grace", "20")
    wait_for(lambda: step_of(pg_store, job_id) > 20, 60, "saved progress")
    a.signal(signal.SIGTERM)
    t = time.monotonic()
    assert a.wait(30) == 0
    assert time.monotonic() - t < 20  # well within the grace
    job, state = pg_store.job(job_id)
    assert job.status == Status.START and job.priority == RESTART_PRIORITY
    saved = state["step"]
    assert 20 < saved < 300
    b = workers(pg_url, "b", "--exproot", str(exproot), "--until-empty")
    assert b.wait(60) == 0
    job, state = pg_store.job(job_id)
    assert job.status == Status.DONE
    assert state["result"] == total(300) and state["step"] == 300  # = an uninterrupted run
    lines = starts(exproot, job_id)
    assert len(lines) == 2 and lines[1].startswith(f"start at step {saved} ")
    assert [e.kind for e in pg_store.events(job_id)] == ["booked", "requeued", "booked",
                                                         "finished"]


def test_kill9_worker_job_is_rescued_and_rerun(pg_store, pg_url, tmp_path, workers):
    exproot = tmp_path / "exproot"
    exproot.mkdir()  # a worker never creates a missing root: it may be an unmounted disk
    # Long enough (8 s) that the job is still running when the second worker is up and
    # the first is killed, even on a loaded machine.
    (job_id,) = pg_store.enqueue(LOOP, [{"total": 400, "sleep": 0.02}]).created
    fast = ("--heartbeat", "0.3", "--lease", "2", "--exproot", str(exproot),
            "--poll-interval", "0.2")
    a = workers(pg_url, "a", *fast)
    wait_for(lambda: step_of(pg_store, job_id) > 10, 60, "saved progress")
    b = workers(pg_url, "b", *fast)  # idle: nothing is ready
    b.wait_log("started")
    killed_at = time.monotonic()
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    # b rescues it once its own connection is a lease old and the job's heartbeat is stale,
    # then books it again.
    wait_for(lambda: pg_store.job(job_id)[0].attempts == 2, 30, "the job booked again")
    assert time.monotonic() - killed_at < 2 + 0.3 + 2 + 3  # lease + heartbeat + gate + slack
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.DONE, 60, "DONE")
    job, state = pg_store.job(job_id)
    assert state["result"] == total(400) and job.losses == 1
    kinds = [e.kind for e in pg_store.events(job_id)]
    assert kinds == ["booked", "lost", "booked", "finished"]
    # The dead owner's child, orphaned, wrote nothing: it has no database connection, its
    # pipe to the dead supervisor broke (which it takes as a stop), and it is gone.
    first_pid = int(starts(exproot, job_id)[0].split("pid ")[1])
    wait_for(lambda: not alive(first_pid), 30, "the orphaned child to exit")
    assert pg_store.job(job_id)[1] == state


def test_drain_all_finishes_current_jobs_and_books_nothing_new(
        pg_store, pg_url, tmp_path, workers):
    from tests.acceptance.conftest import Cli

    # Jobs of several seconds: the drain command (a new interpreter) must reach the workers
    # before their first jobs end, even on a loaded machine.
    ids = pg_store.enqueue(LOOP, [{"total": 120, "sleep": 0.05, "i": i}
                                  for i in range(6)]).created
    a = workers(pg_url, "a")
    b = workers(pg_url, "b")
    wait_for(lambda: len(pg_store.jobs(statuses=["RUNNING"])) == 2, 30, "two running jobs")
    out = Cli(pg_url, tmp_path)("dbdict-worker", "drain", "--all").stdout
    assert "draining 2 worker(s)" in out
    assert a.wait(60) == 0 and b.wait(60) == 0
    counts = pg_store.counts()
    assert counts == {("default", Status.DONE): 2, ("default", Status.START): 4}
    assert sum(j.attempts for j in pg_store.jobs()) == 2  # nothing booked after the drain
    assert "draining" in a.log() and "exits" in a.log()
    assert len(ids) == 6


def test_sigusr1_drains_locally_and_spares_the_experiments(pg_store, pg_url, tmp_path,
                                                         workers):
    ids = pg_store.enqueue(LOOP, [{"total": 40, "sleep": 0.02, "i": i} for i in range(3)])\
        .created
    a = workers(pg_url, "a")
    wait_for(lambda: pg_store.jobs(statuses=["RUNNING"]), 30, "a running job")
    log = wait_for(lambda: next(tmp_path.glob(f"dbdict-jobs/*/default/{ids[0]}/starts.log"),
                                None), 30, "the experiment's first line")
    child = int(wait_for(log.read_text, 10, "starts.log written").split("pid ")[1])
    # As `systemctl kill -s USR1` does: the signal reaches the experiment too.
    os.kill(child, signal.SIGUSR1)
    a.signal(signal.SIGUSR1)
    assert a.wait(60) == 0
    assert pg_store.counts() == {("default", Status.DONE): 1, ("default", Status.START): 2}
    assert pg_store.job(ids[0])[0].status == Status.DONE


def test_idle_worker_picks_up_a_new_job_without_fast_polling(pg_store, pg_url, workers):
    a = workers(pg_url, "a", "--poll-interval", "30")
    a.wait_log("listening for new jobs")
    (job_id,) = pg_store.enqueue("dbdict_worker.examples.add", [{"first": 1, "second": 2}])\
        .created
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.DONE, 20, "DONE")
    job, _ = pg_store.job(job_id)
    pickup = (job.booked_at - job.created_at).total_seconds()
    assert pickup < 1.0, pickup  # loose bound; the typical figure is in the benchmark
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0


def test_failures_end_in_defined_statuses_and_the_worker_goes_on(
        pg_store, pg_url, tmp_path, workers):
    exproot = tmp_path / "exproot"
    exproot.mkdir()  # a worker never creates a missing root: it may be an unmounted disk
    bad_import = pg_store.enqueue("no_such_pkg_xyz.run", [{"x": 1}]).created[0]
    raises = pg_store.enqueue("dbdict_worker.examples.fail", [{"x": 2}]).created[0]
    good = pg_store.enqueue("dbdict_worker.examples.add", [{"first": 1, "second": 1}])\
        .created[0]
    a = workers(pg_url, "a", "--until-empty", "--exproot", str(exproot))
    assert a.wait(60) == 0
    job, _ = pg_store.job(bad_import)
    assert job.status == Status.ERR_START and "no_such_pkg_xyz" in job.error
    job, _ = pg_store.job(raises)
    assert job.status == Status.ERR_RUN and "ExperimentFailed: deliberate failure" in job.error
    stderr = next(exproot.glob(f"*/default/{raises}/stderr")).read_text()
    assert "Traceback" in stderr
    assert pg_store.job(good)[0].status == Status.DONE


def test_unwritable_exproot_is_err_sync_with_local_copy_kept(
        pg_store, pg_url, tmp_path, workers):
    exproot = tmp_path / "exproot"
    exproot.mkdir()  # a worker never creates a missing root: it may be an unmounted disk
    (job_id,) = pg_store.enqueue(LOOP, [{"total": 100, "sleep": 0.02}]).created
    a = workers(pg_url, "a", "--exproot", str(exproot), "--until-empty",
                "--workdir-base", str(tmp_path / "local"),
                env={"DBDICT_SYNC_ATTEMPTS": "2", "DBDICT_SYNC_MAX_SECONDS": "2",
                     "DBDICT_SYNC_PUSH_INTERVAL": "3600"})
    wait_for(lambda: step_of(pg_store, job_id) > 5, 60, "the job running")
    # The exproot goes away under the running job: its directory becomes a plain file.
    (remote,) = exproot.glob(f"*/default/{job_id}")
    for child in remote.iterdir():
        child.unlink()
    remote.rmdir()
    remote.write_text("not a directory any more")
    assert a.wait(60) == 0
    job, state = pg_store.job(job_id)
    assert job.status == Status.ERR_SYNC
    local = Path(job.workdir)
    assert local.is_relative_to(tmp_path / "local") and (local / "current.conf").exists()
    assert str(local) in job.error and state["result"] == total(100)


def test_status_lists_live_workers_and_their_jobs(pg_store, pg_url, tmp_path, workers):
    from tests.acceptance.conftest import Cli

    cli = Cli(pg_url, tmp_path)
    (job_id,) = pg_store.enqueue(LOOP, [{"total": 500, "sleep": 0.02}]).created
    a = workers(pg_url, "a", "--heartbeat", "0.5", "--lease", "5")
    wait_for(lambda: pg_store.jobs(statuses=["RUNNING"]), 30, "a running job")
    status = wait_for(lambda: (lambda s: s if s["workers"] and s["workers"][0]["jobs"]
                               else None)(cli.json("dbdict-worker", "status", "--json")),
                      30, "the worker in status")
    (w,) = status["workers"]
    assert w["pid"] == a.pid and w["slots"] == 1 and w["state"] == "running"
    assert w["jobs"] == [job_id] and 0 <= w["heartbeat_age"] < 5
    assert status["jobs"] == {"RUNNING": 1}
    text = cli("dbdict-worker", "status").stdout
    assert str(a.pid) in text and "RUNNING 1" in text
    bad = cli("dbdict-worker", "drain", ok=False)
    assert bad.returncode == 2
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0
    assert cli.json("dbdict-worker", "status", "--json")["workers"] == []
    stopped = cli.json("dbdict-worker", "status", "--json", "--all")["workers"]
    assert stopped[0]["state"] == "stopped"


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_sigterm_while_waiting_for_the_database_at_start_exits_0(tmp_path, workers):
    from tests.support.pgserver import free_port

    w = workers(f"postgresql://nobody@127.0.0.1:{free_port()}/db", "early")
    wait_for(lambda: _catches_sigterm(w.pid), 30, "the worker's SIGTERM handler")
    w.signal(signal.SIGTERM)
    assert w.wait(10) == 0
    assert "stopped before it started" in w.log()
