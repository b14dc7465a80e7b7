"""``dbdict-worker start``'s documented options and behaviours that the main worker tests do
not cover (README "Running workers"): GPUs, --max-jobs, several --table,
--poll-only, a live worker that lost its job, the second SIGTERM, drain by worker and host,
and systemd's notify protocol. Real PostgreSQL, real worker processes, real signals."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.job.workdir import Workdir
from dbdict_worker.state import user_keys
from tests.acceptance.conftest import Cli
from tests.acceptance.workers import WorkerProc, alive
from tests.support.waiting import wait_for

ADD = "dbdict_worker.examples.add"
LOOP = "dbdict_worker.examples.loop"
NOOP = "dbdict_worker.examples.noop"
SHELL_OUT = "dbdict_worker.examples.shell_out"
STUBBORN = "dbdict_worker.examples.stubborn"
#: Short timings, so that losing and rescuing a job takes seconds.
FAST = ("--heartbeat", "0.3", "--lease", "2", "--poll-interval", "0.2")


def _status(cli: Cli) -> dict:
    return cli.json("dbdict-worker", "status", "--json")


def _worker_id(cli: Cli, w: WorkerProc) -> str:
    """The id `dbdict-worker status --json` gives the worker with this pid."""
    def find():
        return next((r["id"] for r in _status(cli)["workers"] if r["pid"] == w.pid), None)
    return wait_for(find, 30, f"worker {w.pid} in status")


def _child_pid(workdir: Path) -> int:
    """The pid the loop example wrote to its workdir's starts.log."""
    log = wait_for(lambda: (workdir / "starts.log").exists() and
                   (workdir / "starts.log").read_text(), 30, f"{workdir}/starts.log")
    return int(log.splitlines()[0].split("pid ")[1])


def test_gpus_give_each_job_exactly_one_of_them(pg_store, pg_url, workers):
    ids = pg_store.enqueue(SHELL_OUT, [{"i": 0}, {"i": 1}]).created
    w = workers(pg_url, "gpus", "--gpus", "5,7", "--until-empty")
    # --until-empty leaves once the last result is written, not at the next (30 s) poll.
    assert w.wait(20) == 0
    jobs = pg_store.jobs_with_state()
    assert [j.id for j, _ in jobs] == ids and {j.status for j, _ in jobs} == {Status.DONE}
    # One slot per GPU, both booked at once: each child saw one GPU, and not the same one.
    assert sorted(state["gpu"] for _, state in jobs) == ["5", "7"]
    assert "2 slot(s) on GPUs 5,7" in w.log()


def test_max_jobs_exits_after_that_many_bookings(pg_store, pg_url, workers):
    pg_store.enqueue(NOOP, [{"i": i} for i in range(5)])
    w = workers(pg_url, "max", "--max-jobs", "2")  # no --until-empty: --max-jobs ends it
    assert w.wait(60) == 0
    assert pg_store.counts() == {("default", Status.DONE): 2, ("default", Status.START): 3}
    assert sum(j.attempts for j in pg_store.jobs()) == 2


def test_several_tables_book_only_from_those(pg_store, pg_url, workers):
    for table in ("a", "b", "c"):
        pg_store.enqueue(ADD, [{"first": 1, "second": i} for i in range(2)], table=table)
    w = workers(pg_url, "tables", "--table", "a", "--table", "b", "--until-empty")
    assert w.wait(20) == 0  # c's ready jobs do not keep it: empty means empty for a and b
    assert pg_store.counts() == {("a", Status.DONE): 2, ("b", Status.DONE): 2,
                                 ("c", Status.START): 2}
    assert all(j.attempts == 0 for j in pg_store.jobs(tables="c"))  # never touched
    assert "tables a,b" in w.log()


def test_poll_only_does_not_listen_and_still_picks_up_new_jobs(pg_store, pg_url, workers):
    w = workers(pg_url, "poll", "--poll-only", "--poll-interval", "0.5")
    w.wait_log("started")
    (job_id,) = pg_store.enqueue("dbdict_worker.examples.stamp", [{"x": 1}]).created
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.DONE, 30, "DONE")
    job, _ = pg_store.job(job_id)
    pickup = (job.booked_at - job.created_at).total_seconds()
    assert pickup < 5, pickup  # by polling every 0.5 s (no LISTEN, no 30 s safety net)
    # The worker's connections to this database: its pool is there, no LISTEN connection.
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalars()
            names = set(names)
    finally:
        engine.dispose()
    assert "dbdict-worker" in names and "dbdict-worker-listen" not in names, names
    assert "listening for new jobs" not in w.log()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0


def test_live_worker_that_lost_its_job_kills_it_and_writes_nothing(
        pg_store, pg_url, tmp_path, workers):
    (job_id,) = pg_store.enqueue(LOOP, [{"total": 200, "sleep": 0.04}]).created
    # Frozen in the middle of a save's transaction, a would hold the job's row lock, which
    # b's rescue skips: the server ends such a session after a second, as the README tells
    # administrators to set up (idle_in_transaction_session_timeout).
    a = workers(pg_url, "a", *FAST, "--workdir-base", str(tmp_path / "wa"),
                env={"PGOPTIONS": "-c idle_in_transaction_session_timeout=1000"})
    wait_for(lambda: pg_store.job(job_id)[1].get("step", 0) > 5, 60, "saved progress")
    a_id = pg_store.job(job_id)[0].worker_id
    (a_dir,) = (tmp_path / "wa").glob(f"*/default/{job_id}")
    a_child = _child_pid(a_dir)
    # b books one job (the one it will take over), then exits.
    b = workers(pg_url, "b", *FAST, "--max-jobs", "1", "--workdir-base", str(tmp_path / "wb"))
    b.wait_log("started")
    # Freeze a's supervisor only. The experiment runs in its own session (setsid), so it
    # goes on stepping and saving: when a wakes up it holds saves newer than the database
    # and a finished-or-running job that is no longer its own, which is what fencing is for.
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: pg_store.job(job_id)[0].attempts == 2, 30, "b booking the job")
        assert alive(a_child), "a's experiment ended while a was stopped: job too short"
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a.wait_log(f"job {job_id} was taken away (cancelled or requeued): stopping it")
    a.wait_log(f"job {job_id}: stopped, it is no longer ours (nothing written)")
    wait_for(lambda: not alive(a_child), 10, "a's experiment killed")
    assert b.wait(60) == 0
    job, state = pg_store.job(job_id)
    b_id = job.worker_id
    assert job.status == Status.DONE and b_id not in (None, a_id)
    assert state["result"] == 200 * 201 // 2 and state["step"] == 200
    assert Path(job.workdir).is_relative_to(tmp_path / "wb")  # b's copy is the record
    events = pg_store.events(job_id)
    # Rescued by b (a was frozen), then b's booking and b's result; nothing from a after.
    assert [(e.kind, e.worker_id) for e in events] == \
        [("booked", a_id), ("lost", b_id), ("booked", b_id), ("finished", b_id)]
    # a's copy never reached the end: it was killed, not left to finish.
    assert user_keys(Workdir(a_dir).read_current())["step"] < 200
    # a goes on: it is alive, and it books and runs the next job.
    assert a.proc.poll() is None
    (next_id,) = pg_store.enqueue(ADD, [{"first": 2, "second": 3}]).created
    wait_for(lambda: pg_store.job(next_id)[0].status == Status.DONE, 30, "a's next job")
    assert pg_store.job(next_id)[0].worker_id == a_id
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0


def _saved_step(pg_store, job_id: int) -> int:
    return pg_store.job(job_id)[1].get("step", 0)


def test_second_sigterm_kills_the_jobs_at_once(pg_store, pg_url, workers):
    (job_id,) = pg_store.enqueue(STUBBORN, [{"sleep": 0.01}]).created
    w = workers(pg_url, "w", "--grace", "60")
    wait_for(lambda: _saved_step(pg_store, job_id) > 5, 60, "saved progress")
    w.signal(signal.SIGTERM)
    w.wait_log("stopping: 1 job(s) get SIGTERM and 60s")
    # The experiment got the SIGTERM, saw 'stop' and saved that it ignored it.
    wait_for(lambda: pg_store.job(job_id)[1].get("stops", 0) >= 1, 30, "the stop seen")
    before = _saved_step(pg_store, job_id)
    t = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert time.monotonic() - t < 10  # not the 60 s grace
    assert "stopping now: killing 1 job(s)" in w.log()
    job, state = pg_store.job(job_id)
    assert job.status == Status.START and job.priority == RESTART_PRIORITY
    # Requeued with its last save: what the killed experiment last wrote to its workdir.
    last = user_keys(Workdir(job.workdir).read_current())
    assert state["step"] == last["step"] >= before


def test_one_sigterm_kills_an_unstoppable_job_after_the_grace(pg_store, pg_url, workers):
    (job_id,) = pg_store.enqueue(STUBBORN, [{"sleep": 0.01}]).created
    w = workers(pg_url, "w", "--grace", "1")
    wait_for(lambda: _saved_step(pg_store, job_id) > 5, 60, "saved progress")
    before = _saved_step(pg_store, job_id)
    t = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert 1 <= time.monotonic() - t < 15
    assert "did not stop within the grace period: killed" in w.log()
    job, state = pg_store.job(job_id)
    assert job.status == Status.START and job.priority == RESTART_PRIORITY
    assert job.attempts == 1 and job.worker_id is None
    # It ran through the grace (saving as it went) after seeing the stop.
    assert state["step"] > before and state["stops"] >= 1
    assert [e.kind for e in pg_store.events(job_id)] == ["booked", "requeued"]


def test_drain_one_worker_then_a_host(pg_store, pg_url, tmp_path, workers):
    cli = Cli(pg_url, tmp_path)
    opts = ("--heartbeat", "0.5", "--lease", "5")
    a = workers(pg_url, "a", *opts)
    b = workers(pg_url, "b", *opts)
    a_id, b_id = _worker_id(cli, a), _worker_id(cli, b)
    out = cli("dbdict-worker", "drain", "--worker", a_id).stdout
    assert f"draining 1 worker(s): {a_id}" in out
    assert a.wait(30) == 0 and "draining" in a.log()
    # b did not drain: it stays running and books what comes next.
    assert b.proc.poll() is None
    (job_id,) = pg_store.enqueue(ADD, [{"first": 1, "second": 1}]).created
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.DONE, 30, "b's job")
    assert pg_store.job(job_id)[0].worker_id == b_id
    assert {r["id"]: r["state"] for r in _status(cli)["workers"]} == {b_id: "running"}
    c = workers(pg_url, "c", *opts)
    c_id = _worker_id(cli, c)
    out = cli("dbdict-worker", "drain", "--host", socket.gethostname()).stdout
    assert f"draining 2 worker(s): {' '.join(sorted([b_id, c_id]))}" in out
    assert b.wait(30) == 0 and c.wait(30) == 0
    assert _status(cli)["workers"] == []


@pytest.fixture
def notify_socket():
    # A short path: AF_UNIX addresses are limited to ~108 bytes, pytest's tmp_path may not be.
    d = tempfile.mkdtemp(prefix="dbdict-sd-", dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def _next_message(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except socket.timeout:
        pytest.fail(f"no systemd notification within {timeout:g}s")


def test_systemd_notify_ready_watchdog_stopping(pg_store, pg_url, workers, notify_socket):
    sock, path = notify_socket
    w = workers(pg_url, "sd", "--heartbeat", "0.5", "--lease", "5",
                env={"NOTIFY_SOCKET": path})
    first = _next_message(sock, 60)
    assert re.match(r"READY=1(\n|$)", first), first
    assert f"STATUS=worker {socket.gethostname()}-{w.pid}-" in first, first
    # READY means started: the worker is registered by then.
    assert w.pid in [r.pid for r in pg_store.workers()]
    # WATCHDOG=1 at each heartbeat (0.5 s): three in a row, each well within a few beats.
    for _ in range(3):
        assert _next_message(sock, 5) == "WATCHDOG=1"
    w.signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while (message := _next_message(sock, max(0.1, deadline - time.monotonic()))) \
            != "STOPPING=1":
        assert message == "WATCHDOG=1", message
    assert w.wait(30) == 0
