"""At most one running copy of a job, and no job stranded: the child's lease watchdog on real
processes, the stale rule on a real PostgreSQL restart, and a real in-process Supervisor that
rescues a long-dead owner's job at once and waits, with --until-empty, for jobs others run."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbdict_worker.constants import Status
from dbdict_worker.job.cmdexp import CommandTemplate
from dbdict_worker.job.process import JobProcess, JobSpec
from dbdict_worker.store import Store
from dbdict_worker.worker.events import Booked, Exited
from dbdict_worker.worker.lease import pause_margin
from dbdict_worker.worker.supervisor import Supervisor, WorkerConfig
from dbdict_worker.worker.writes import Outage
from tests.support.waiting import wait_for

INTERVALS = "dbdict_worker.examples.intervals"


def group_states(pgid: int) -> list[str]:
    """The states (R, S, T...) of the processes of group ``pgid``."""
    states = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                states.append(fields[0])
    return states


def stopped(pgid: int) -> bool:
    states = group_states(pgid)
    return bool(states) and all(s in "Tt" for s in states)


def last_alive(log: Path) -> float:
    return max((float(line.split()[1]) for line in log.read_text().splitlines()), default=0.0)


# ------------------------------------------------------------------------------------------
# The child's watchdog (no database)


def test_a_job_past_its_renewed_deadline_stops_its_whole_group_until_renewed(tmp_path):
    log = tmp_path / "runs.log"
    deadline = time.monotonic() + 1.5
    proc = JobProcess.start(JobSpec(INTERVALS, {"log": str(log), "total": 100000,
                                                "sleep": 0.02},
                                    workdir=tmp_path / "job", renewed_until=deadline))
    try:
        wait_for(lambda: stopped(proc.pid), 20, "the job paused by its watchdog")
        seen_stopped = time.monotonic()
        assert seen_stopped >= deadline  # not before its deadline...
        assert last_alive(log) <= seen_stopped  # ...and it does nothing while paused
        # Renewed: resumed, and it runs on past the old deadline.
        resumed_at = time.monotonic()
        assert proc.renew(resumed_at + 2.0)
        wait_for(lambda: last_alive(log) > resumed_at, 20, "the job running again")
        # Not renewed again: paused again at the new deadline.
        wait_for(lambda: stopped(proc.pid), 20, "the job paused again")
        assert time.monotonic() >= resumed_at + 2.0
        # A renewal that comes too late resumes nothing; SIGCONT without one, neither.
        assert not proc.renew(time.monotonic() - 0.1)
        assert proc.pause() and stopped(proc.pid)
    finally:
        proc.kill()
    outcome = proc.wait(30)
    assert outcome is not None and outcome.status == Status.START and outcome.stopped


def test_a_command_experiment_is_paused_with_the_programs_it_started(tmp_path):
    log = tmp_path / "cmd.log"
    command = CommandTemplate.from_text(
        f"while :; do echo alive >> {log}; sleep 0.05; done", shell=True).encode()
    proc = JobProcess.start(JobSpec(command, {}, workdir=tmp_path / "job",
                                    renewed_until=time.monotonic() + 1.5))
    try:
        wait_for(lambda: log.exists() and len(group_states(proc.pid)) >= 2, 20,
                 "the program running")
        wait_for(lambda: stopped(proc.pid), 20, "the runner and its shell paused")
        assert len(group_states(proc.pid)) >= 2
        size = log.stat().st_size
        assert proc.renew(time.monotonic() + 30)
        wait_for(lambda: log.stat().st_size > size, 20, "the program running again")
        assert not any(s in "Tt" for s in group_states(proc.pid))
    finally:
        proc.kill()
    assert proc.wait(30) is not None


def test_the_pause_margin_leaves_a_healthy_job_running_between_heartbeats():
    for lease, heartbeat in [(60, 10), (3, 0.5), (20, 10), (1.0, 0.9)]:
        margin = pause_margin(lease, heartbeat)
        assert 0 < margin and heartbeat < lease - margin < lease


# ------------------------------------------------------------------------------------------
# The stale rule and who may judge


def test_a_worker_that_saw_no_failure_judges_at_once_and_after_one_waits_a_lease():
    now = [0.0]
    outage = Outage(clock=lambda: now[0])
    assert outage.healthy_for(60)
    outage.failed("blip", 2.0)
    outage.succeeded()
    assert not outage.healthy_for(60)
    now[0] += 60
    assert outage.healthy_for(60)


def test_a_backoff_never_longer_than_asked():
    now = [0.0]
    outage = Outage(clock=lambda: now[0], max_backoff=1.0)

    def away():
        from dbdict_worker.errors import DatabaseUnavailable
        raise DatabaseUnavailable("away")

    for _ in range(6):
        outage.call(away)
        assert outage.retry_at - now[0] <= 1.0
        now[0] = outage.retry_at


@pytest.fixture
def private_store(private_pg):
    name = "rescue_restart"
    admin = sa.create_engine(private_pg.url(), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = private_pg.url(database=name)
    Store.open(url, check_schema=False).upgrade()
    store = Store.open(url, retry_seconds=30)
    yield store
    store.close()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.mark.slow
def test_after_a_restart_no_heartbeat_is_older_than_the_server(private_pg, private_store):
    lease = 4.0
    private_store.enqueue(INTERVALS, [{"log": "/dev/null"}])
    (booking,) = private_store.book("gone", "nowhere")
    booked = time.monotonic()
    wait_for(lambda: time.monotonic() > booked + lease + 0.5, lease + 5, "an old heartbeat")
    private_pg.restart(down_seconds=1)
    up = time.monotonic()
    # The heartbeat is older than the lease, the server is not: nobody judges it yet.
    assert private_store.requeue_stale(lease, by_worker="judge") == []
    assert time.monotonic() - up < lease - 1  # (the check above was made in time)
    rescued = wait_for(lambda: private_store.requeue_stale(lease, by_worker="judge"),
                       lease + 20, "the job rescued a lease after the restart")
    assert time.monotonic() - up >= lease - 1.0
    assert [(r.job_id, r.status) for r in rescued] == [(booking.job.id, Status.START)]


# ------------------------------------------------------------------------------------------
# A real supervisor


class Milestones(list):
    """Each milestone with the time.monotonic() it came at."""

    def __call__(self, milestone) -> None:  # noqa: ANN001
        self.append((time.monotonic(), milestone))


def run_supervisor(url: str, tmp_path: Path, **options) -> tuple[Supervisor, Milestones,
                                                                   threading.Thread, Store]:
    store = Store.open(url, retry_seconds=5)
    config = dict(slots=1, heartbeat=0.2, lease=4.0, grace=5.0, poll_only=True,
                  poll_interval=0.2, until_empty=True, workdir_base=str(tmp_path / "jobs"))
    config.update(options)
    seen = Milestones()
    supervisor = Supervisor(store, WorkerConfig(**config), observer=seen, call_retry=0.3)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    return supervisor, seen, thread, store


def stop(supervisor: Supervisor, thread: threading.Thread, store: Store) -> None:
    supervisor.final_wait = 0.0
    supervisor.request_stop()
    supervisor.request_stop()
    thread.join(30)
    store.close()


def test_a_fresh_worker_rescues_a_long_dead_owners_job_at_once(pg_store, pg_url, tmp_path):
    lease = 4.0
    (job_id,) = pg_store.enqueue(INTERVALS, [{"log": str(tmp_path / "runs.log"), "total": 5,
                                              "sleep": 0.01}]).created
    pg_store.book("long-dead", "nowhere")
    booked = time.monotonic()
    wait_for(lambda: time.monotonic() > booked + lease + 0.5, lease + 5, "an old heartbeat")
    started = time.monotonic()
    supervisor, seen, thread, store = run_supervisor(pg_url, tmp_path, lease=lease)
    try:
        thread.join(60)
        assert not thread.is_alive()
        (at, _), = [(t, m) for t, m in seen if isinstance(m, Booked) and m.job_id == job_id]
        assert at - started < lease / 2  # judged at its first heartbeat, not a lease later
        job, state = pg_store.job(job_id)
        assert (job.status, job.attempts, job.losses, state["result"]) == \
            (Status.DONE, 2, 1, 15)
    finally:
        stop(supervisor, thread, store)


def test_until_empty_waits_for_a_job_another_worker_runs_and_rescues_it_if_it_dies(
        pg_store, pg_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dbdict_worker")
    (job_id,) = pg_store.enqueue(INTERVALS, [{"log": str(tmp_path / "runs.log"), "total": 5,
                                              "sleep": 0.01}]).created
    (booking,) = pg_store.book("other", "elsewhere")
    supervisor, seen, thread, store = run_supervisor(pg_url, tmp_path, lease=3.0)
    try:
        # The other worker is alive (it heartbeats): ours waits, and takes nothing away.
        waited = time.monotonic()
        while time.monotonic() < waited + 5:  # longer than the lease
            assert pg_store.heartbeat("other", [booking.token]) == {job_id}
            assert thread.is_alive(), "exited while a job of its tables was running"
            time.sleep(0.2)  # the other worker's heartbeat period, not a wait for a result
        assert any("run under other workers: waiting" in r.getMessage()
                   for r in caplog.records)
        assert not [m for _, m in seen if isinstance(m, Booked)]
        # The other worker dies: its job is rescued once the lease passes, and run here.
        thread.join(60)
        assert not thread.is_alive()
        job, state = pg_store.job(job_id)
        assert (job.status, job.attempts, job.losses, state["result"]) == \
            (Status.DONE, 2, 1, 15)
        assert [m for _, m in seen if isinstance(m, Exited)] == [Exited(booked=1, unwritten=0)]
    finally:
        stop(supervisor, thread, store)
