"""The worker against a private PostgreSQL server: restarted under running jobs, and
reached with a password that must never show in ``ps``."""
from __future__ import annotations

import itertools
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbdict_worker.constants import Status
from dbdict_worker.store import Store
from tests.acceptance.workers import WorkerProc
from tests.support.waiting import wait_for

LOOP = "dbdict_worker.examples.loop"
_names = itertools.count()


@pytest.fixture
def private_db(private_pg):
    """A fresh database with the schema on the private server; its URL (with password)."""
    name = f"outage_{next(_names)}"
    admin = sa.create_engine(private_pg.url(), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = private_pg.url(database=name)
    Store.open(url, check_schema=False).upgrade()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.mark.slow
def test_database_restart_under_running_jobs(private_pg, private_db, tmp_path):
    store = Store.open(private_db, retry_seconds=30)
    ids = store.enqueue(LOOP, [{"total": 80, "sleep": 0.05, "i": i} for i in range(8)]).created
    # A lease shorter than the outage: the jobs pause before their lease ends and go on once
    # their worker renews it; no heartbeat counts as older than the server's start, so each
    # worker has a whole lease after the restart to renew before anyone may take its jobs.
    (tmp_path / "exproot").mkdir()
    # (4 s: after the server is back a worker retries within a third of its lease, then
    # renews; 3 s left too little margin on a loaded 2-core machine, seen once in the suite.)
    args = ("--slots", "2", "--heartbeat", "0.5", "--lease", "4", "--poll-interval", "0.5",
            "--until-empty", "--exproot", str(tmp_path / "exproot"))
    workers = [WorkerProc(private_db, tmp_path, f"w{k}", *args) for k in range(2)]
    try:
        wait_for(lambda: len(store.jobs(statuses=["RUNNING"])) == 4, 60, "4 running jobs")
        wait_for(lambda: all(s.get("step", 0) > 3 for _, s in
                             store.jobs_with_state(statuses=["RUNNING"])), 60, "progress")
        private_pg.restart(down_seconds=5)
        assert all(w.proc.poll() is None for w in workers)  # they outlived the outage
        wait_for(lambda: store.counts() == {("default", Status.DONE): 8}, 120, "all DONE")
        for w in workers:
            assert w.wait(60) == 0
    finally:
        for w in workers:
            w.close()
    for job, state in store.jobs_with_state():
        assert state["result"] == 80 * 81 // 2
        # None requeued spuriously (the history says by whom, if one was).
        assert job.attempts == 1 and job.losses == 0, (job, store.events(job.id))
        assert "lost" not in [e.kind for e in store.events(job.id)]
    logs = [w.log() for w in workers]
    assert any("database unreachable" in log for log in logs)
    # The jobs did pause (the outage outlasted what their lease allows) and were resumed.
    assert any("resumed: its lease is renewed" in log for log in logs)
    for log in logs:  # the outage is logged once, not once per retry
        assert log.count("database unreachable") <= 1
        if "database unreachable" in log:
            assert "database is back" in log
    assert len(ids) == 8
    store.close()


def test_password_on_the_command_line_leaves_ps(private_pg, private_db, tmp_path):
    store = Store.open(private_db)
    store.enqueue(LOOP, [{"total": 2000, "sleep": 0.01}])
    w = WorkerProc("", tmp_path, "pw", "--db", private_db)
    try:
        w.wait_log("started")
        cmdline = Path(f"/proc/{w.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert private_pg.password not in cmdline and "dbdict_worker" in cmdline
        wait_for(lambda: store.jobs(statuses=["RUNNING"]), 30, "a running job")
        # Everything the worker started (the fork server, the experiment) sees no password,
        # not even in the memory its environment came from.
        below = wait_for(lambda: [p for p in _descendants(w.pid)
                                  if b"dbdict_worker.job.runner" in _cmdline(p)
                                  or b"forkserver" in _cmdline(p)], 30, "the job's processes")
        for pid in _descendants(w.pid):
            assert private_pg.password.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        assert below
        assert private_pg.password not in w.log()
        w.signal(signal.SIGTERM)
        assert w.wait(60) == 0
    finally:
        w.close()
    store.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(root: int) -> list[int]:
    """The processes below ``root`` (by parent pid), alive now."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found
