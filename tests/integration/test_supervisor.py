"""A real Supervisor in this process, on a real PostgreSQL: database outages, stopping with
results unwritten, a job taken over by another worker, a second stop signal.

The supervisor's loop runs in a thread; each test waits on the milestones it reports to its
observer (booked, ended, written, outage started and ended, ...), never on a sleep. Outages
are real: the supervisor reaches PostgreSQL through a TCP forwarder that the test cuts (every
connection dropped, new ones closed at once) and restores. Where the experiment is not the
point, a job run the test drives stands in for it (it saves and ends when told); otherwise
real children run the shipped examples.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from typing import Any

import pytest

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.errors import DatabaseUnavailable
from dbdict_worker.job.jobrun import JobRun, RunResult
from dbdict_worker.job.process import JobSpec, Outcome
from dbdict_worker.store import Store
from dbdict_worker.worker.events import (Booked, Ended, Exited, OutageEnded, OutageStarted,
                                         Stopping, TakenAway, Written)
from dbdict_worker.worker.ports import QueueStore
from dbdict_worker.worker.supervisor import Supervisor, WorkerConfig
from dbdict_worker.worker.writes import FINAL_WAIT_SECONDS, Outage
from tests.acceptance.workers import alive
from tests.support.proxy import Proxy
from tests.support.waiting import wait_for

FAKE = "tests.never.imported"  # jobs run by FakeRun: their experiment is never imported
LOOP = "dbdict_worker.examples.loop"
STUBBORN = "dbdict_worker.examples.stubborn"


# ------------------------------------------------------------------------------------------
# What the tests drive


class FakeRun:
    """A job run the test drives: it saves and ends when told. Asked to stop, it ends
    INCOMPLETE (to be requeued) with its state; abandoned, it ends at once."""

    def __init__(self, spec: JobSpec, *, on_save, **_: Any) -> None:
        self.job_id: int = spec.reserved["dbdict.id"]
        self.state = dict(spec.state)
        self.on_save = on_save
        self._orders: queue.Queue = queue.Queue()
        self._abandoned = False

    # What the supervisor calls.

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def request_stop(self) -> None:
        self._orders.put(("stop", Status.START, {"stopped": True}))

    def abandon(self) -> None:
        self._abandoned = True
        self._orders.put(("stop", Status.ERR_RUN, {}))

    def run(self) -> RunResult:
        while True:
            kind, status, changes = self._orders.get()
            self.state.update(changes)
            if kind == "save":
                self.on_save(dict(self.state))
            else:
                return RunResult(Outcome(status, dict(self.state), stopped=kind == "stop"))

    # What the test calls.

    def save(self, **changes: Any) -> None:
        self._orders.put(("save", None, changes))

    def end(self, status: Status = Status.DONE, **changes: Any) -> None:
        self._orders.put(("end", status, changes))


class Runs:
    """A job run factory for the supervisor that keeps every run it made, in booking order."""

    def __init__(self, make=FakeRun) -> None:  # noqa: ANN001
        self.make = make
        self.made: list = []

    def __call__(self, spec: JobSpec, **kw: Any):  # noqa: ANN204
        run = self.make(spec, **kw)
        self.made.append(run)
        return run

    def started(self, n: int) -> list:
        return wait_for(lambda: list(self.made[:n]) if len(self.made) >= n else None, 30,
                        f"{n} job(s) started")


class Seen(list):
    """The supervisor's observer: the milestones it reported, in order."""

    def __call__(self, milestone) -> None:  # noqa: ANN001
        self.append(milestone)

    def of(self, kind: type, **fields: Any) -> list:
        return [m for m in list(self) if isinstance(m, kind)
                and all(getattr(m, k) == v for k, v in fields.items())]

    def wait(self, kind: type, count: int = 1, timeout: float = 30.0, **fields: Any) -> list:
        return wait_for(lambda: len(self.of(kind, **fields)) >= count and self.of(kind, **fields),
                        timeout, f"{count} {kind.__name__} {fields or ''}")

    def at(self, kind: type, **fields: Any) -> int:
        """The position of the one milestone of this kind (and these fields)."""
        (found,) = self.of(kind, **fields)
        return self.index(found)


class Running:
    """``supervisor.run()`` in a thread."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.code: int | None = None
        self.thread = threading.Thread(target=self._main, name="supervisor", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        self.code = self.supervisor.run()

    def join(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the supervisor did not exit within {timeout}s"
        return self.code


@pytest.fixture
def proxy(pg_url):
    p = Proxy(pg_url)
    yield p
    p.close()


@pytest.fixture
def start(tmp_path):
    """``start(url, job_run, **options)``: a Supervisor on ``url`` running in a thread, with
    short timings; returns (supervisor, its milestones, the thread). Each is stopped at the
    end, even after a failure."""
    made: list[tuple[Store, Supervisor, Running]] = []

    def make(url: str, job_run, *, final_wait: float = FINAL_WAIT_SECONDS,  # noqa: ANN001
             **options: Any) -> tuple[Supervisor, Seen, Running]:
        store = Store.open(url, retry_seconds=5)
        config = dict(slots=1, heartbeat=0.2, lease=60.0, grace=5.0, poll_only=True,
                      poll_interval=0.1, workdir_base=str(tmp_path / "jobs"))
        config.update(options)
        seen = Seen()
        supervisor = Supervisor(store, WorkerConfig(**config), job_run=job_run, observer=seen,
                                call_retry=0.3, final_wait=final_wait)
        running = Running(supervisor)
        made.append((store, supervisor, running))
        return supervisor, seen, running

    yield make
    for store, supervisor, running in made:
        supervisor.final_wait = 0.0
        supervisor.request_stop()
        supervisor.request_stop()
        running.thread.join(30)
        store.close()


def saved(store: Store, job_id: int, key: str = "step") -> Any:
    return store.job(job_id)[1].get(key)


def kinds(store: Store, job_id: int) -> list[str]:
    return [e.kind for e in store.events(job_id)]


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# ------------------------------------------------------------------------------------------
# The outage tracker, on a clock the test moves


def test_outage_starts_when_a_call_gives_up_backs_off_and_ends_at_the_first_success():
    now = [100.0]
    seen = Seen()
    outage = Outage(seen, clock=lambda: now[0])

    def unreachable():
        raise DatabaseUnavailable("away")

    assert outage.call(unreachable) is None and outage.down
    assert seen == [OutageStarted("away")]
    now[0] += 0.2
    assert outage.call(lambda: pytest.fail("called within the backoff")) is None
    now[0] += 0.4  # past the first backoff (0.5 s): tried again, still away
    assert outage.call(unreachable) is None and seen == [OutageStarted("away")]
    now[0] += 0.9
    assert outage.call(lambda: "ok") is None  # the backoff doubled: still waiting
    now[0] += 0.2
    assert outage.call(lambda: "ok") == "ok" and not outage.down
    assert seen == [OutageStarted("away"), OutageEnded(pytest.approx(1.7))]
    # Judging others' heartbeats waits for a whole lease of health, counted from the end.
    assert not outage.healthy_for(60)
    now[0] += 60
    assert outage.healthy_for(60)
    # A failure the store's retries absorbed counts too, without an outage.
    outage.failed("blip", 2.0)
    outage.succeeded()
    assert not outage.healthy_for(60) and seen[-1] == OutageEnded(pytest.approx(1.7))


def test_the_store_is_what_the_supervisor_needs(pg_store):
    assert isinstance(pg_store, QueueStore)


# ------------------------------------------------------------------------------------------
# Outages


def test_jobs_that_end_during_an_outage_are_written_when_it_ends(
        pg_store, proxy, start, caplog):
    caplog.set_level(logging.INFO, logger="dbdict_worker")
    caplog.set_level(logging.INFO, logger="dbdict_worker.db")
    ids = pg_store.enqueue(FAKE, [{"i": i} for i in range(3)]).created
    runs = Runs()
    supervisor, seen, running = start(proxy.url, runs, slots=2, until_empty=True)
    first, second = runs.started(2)
    for run in (first, second):
        run.save(step=1)
    wait_for(lambda: all(saved(pg_store, r.job_id) == 1 for r in (first, second)), 20,
             "the first saves written")
    proxy.cut()
    first.save(step=2)  # its write fails: the outage starts
    seen.wait(OutageStarted)
    first.end(step=3, result=10)
    second.end(step=3, result=20)
    seen.wait(Ended, count=2)
    assert {pg_store.job(r.job_id)[0].status for r in (first, second)} == {Status.RUNNING}
    proxy.restore()
    third = runs.started(3)[2]  # booked once the database is back, not during the outage
    third.end(result=30)
    assert running.join(30) == 0  # --until-empty
    results = {job.id: (job.status, state.get("result")) for job, state
               in pg_store.jobs_with_state()}
    assert results == {first.job_id: (Status.DONE, 10), second.job_id: (Status.DONE, 20),
                       third.job_id: (Status.DONE, 30)}
    assert sorted(results) == ids
    for job in pg_store.jobs():  # each booked once, finished once
        assert (job.attempts, job.losses) == (1, 0)
        assert kinds(pg_store, job.id) == ["booked", "finished"]
    assert saved(pg_store, first.job_id) == saved(pg_store, second.job_id) == 3
    # One outage, reported once; both results written after it, the third job booked after.
    began, back = seen.at(OutageStarted), seen.at(OutageEnded)
    for run in (first, second):
        assert began < seen.at(Ended, job_id=run.job_id) < back
        assert back < seen.at(Written, job_id=run.job_id, status=Status.DONE)
    assert back < seen.at(Booked, job_id=third.job_id)
    assert len(messages(caplog, "database unreachable")) == 1
    assert len(messages(caplog, "database is back")) == 1
    # The store's retries report to the supervisor's tracker: no second account of it.
    assert not [r for r in caplog.records if r.name == "dbdict_worker.db"]


def test_stopping_waits_for_the_database_to_write_the_last_results(
        pg_store, proxy, start):
    pg_store.enqueue(FAKE, [{"i": i} for i in range(2)])
    runs = Runs()
    supervisor, seen, running = start(proxy.url, runs, slots=2)
    done, stopped = runs.started(2)
    done.save(step=5)
    stopped.save(step=7)
    wait_for(lambda: saved(pg_store, done.job_id) == 5 and saved(pg_store, stopped.job_id) == 7,
             20, "the saves written")
    proxy.cut()
    done.save(step=6)
    seen.wait(OutageStarted)
    done.end(result=1)
    seen.wait(Ended, job_id=done.job_id)
    supervisor.request_stop()  # a DONE waits to be written; the other job is stopped
    seen.wait(Stopping)
    seen.wait(Ended, job_id=stopped.job_id, status=Status.START)
    proxy.restore()
    assert running.join(30) == 0
    job, state = pg_store.job(done.job_id)
    assert (job.status, job.attempts, state) == (Status.DONE, 1, {"i": 0, "step": 6,
                                                                   "result": 1})
    job, state = pg_store.job(stopped.job_id)
    assert (job.status, job.priority, job.attempts) == (Status.START, RESTART_PRIORITY, 1)
    assert state == {"i": 1, "step": 7, "stopped": True}
    assert kinds(pg_store, done.job_id) == ["booked", "finished"]
    assert kinds(pg_store, stopped.job_id) == ["booked", "requeued"]
    # It stayed for the database: both written after the outage, then it left.
    back = seen.at(OutageEnded)
    assert seen.at(Stopping) < back < seen.at(Written, job_id=done.job_id) < seen.at(Exited)
    assert back < seen.at(Written, job_id=stopped.job_id, status=Status.START)
    assert seen.of(Exited) == [Exited(booked=2, unwritten=0)]
    (row,) = pg_store.workers(include_stopped=True)
    assert row.id == supervisor.worker_id and row.state == "stopped"


def test_stopping_gives_up_on_a_database_that_stays_away_and_the_job_comes_back_by_lease(
        pg_store, proxy, start, caplog):
    caplog.set_level(logging.INFO, logger="dbdict_worker")
    (job_id,) = pg_store.enqueue(FAKE, [{"i": 0}]).created
    runs = Runs()
    supervisor, seen, running = start(proxy.url, runs, final_wait=1.0)
    (run,) = runs.started(1)
    run.save(step=3)
    wait_for(lambda: saved(pg_store, job_id) == 3, 20, "the save written")
    proxy.cut()
    run.save(step=4)
    seen.wait(OutageStarted)
    run.end(result=1)
    seen.wait(Ended)
    asked = time.monotonic()
    supervisor.request_stop()
    assert running.join(30) == 0  # bounded: the wait, once in the loop and once on the way out
    assert time.monotonic() - asked >= 1.0
    assert seen.of(Exited) == [Exited(booked=1, unwritten=1)]
    assert messages(caplog, "exiting with 1 result(s) unwritten")
    # Nothing was written: the job is still the stopped worker's, with its last written save.
    job, state = pg_store.job(job_id)
    assert (job.status, job.worker_id, job.attempts) == (Status.RUNNING, supervisor.worker_id, 1)
    assert state == {"i": 0, "step": 3} and kinds(pg_store, job_id) == ["booked"]
    # Its heartbeat ages; any worker then requeues it, and it runs again from that state.
    rescued = wait_for(lambda: pg_store.requeue_stale(0.5, by_worker="other"), 10,
                       "the job rescued")
    assert [r.job_id for r in rescued] == [job_id]
    job, state = pg_store.job(job_id)
    assert (job.status, job.losses, state) == (Status.START, 1, {"i": 0, "step": 3})
    assert kinds(pg_store, job_id) == ["booked", "lost"]


# ------------------------------------------------------------------------------------------
# Fencing and signals, with real children


def test_a_job_taken_over_by_another_worker_is_killed_and_nothing_more_of_it_written(
        pg_store, pg_url, start, monkeypatch):
    monkeypatch.setenv("DBDICT_SAVE_INTERVAL", "0.1")
    (job_id,) = pg_store.enqueue(LOOP, [{"total": 100000, "sleep": 0.01}]).created
    runs = Runs(JobRun)
    # --max-jobs 1: once its job is taken away it has nothing left to do, and cannot book
    # that job again before the other worker does.
    supervisor, seen, running = start(pg_url, runs, max_jobs=1, poll_only=False)
    seen.wait(Booked)
    wait_for(lambda: (saved(pg_store, job_id) or 0) > 3, 30, "saved progress")
    child = runs.made[0].process.pid
    # Another worker judges the heartbeat stale (a lease of 0) and books the job.
    wait_for(lambda: pg_store.requeue_stale(0.0, by_worker="other"), 10,
             "the job requeued by another worker")
    taken = pg_store.job(job_id)[1]
    (booking,) = pg_store.book("other", "elsewhere", n=1)
    assert (booking.job.id, booking.token.attempt) == (job_id, 2)
    seen.wait(TakenAway, job_id=job_id)
    assert running.join(30) == 0
    wait_for(lambda: not alive(child), 10, "the experiment killed")
    job, state = pg_store.job(job_id)
    assert (job.status, job.worker_id, job.attempts) == (Status.RUNNING, "other", 2)
    assert state == taken  # no save of the old owner landed after the takeover
    assert [(e.kind, e.worker_id) for e in pg_store.events(job_id)] == \
        [("booked", supervisor.worker_id), ("lost", "other"), ("booked", "other")]
    assert not seen.of(Written)
    pg_store.finish(booking.token, Status.DONE, state={"result": 1})  # the new owner's counts
    assert pg_store.job(job_id)[0].status == Status.DONE


def test_a_second_stop_signal_kills_the_jobs_at_once(pg_store, pg_url, start, monkeypatch):
    monkeypatch.setenv("DBDICT_SAVE_INTERVAL", "0.1")
    (job_id,) = pg_store.enqueue(STUBBORN, [{"sleep": 0.01}]).created
    runs = Runs(JobRun)
    supervisor, seen, running = start(pg_url, runs, grace=60.0, poll_only=False)
    before_handlers = signal.getsignal(signal.SIGTERM)
    with supervisor.signals():
        wait_for(lambda: (saved(pg_store, job_id) or 0) > 5, 30, "saved progress")
        child = runs.made[0].process.pid
        os.kill(os.getpid(), signal.SIGTERM)
        seen.wait(Stopping, kill=False)
        # The experiment got SIGTERM, saw 'stop' and saved that it ignores it.
        wait_for(lambda: (saved(pg_store, job_id, "stops") or 0) >= 1, 30, "the stop seen")
        before = saved(pg_store, job_id)
        second = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        assert running.join(30) == 0
        assert time.monotonic() - second < 10  # killed, not given the 60 s grace
    assert signal.getsignal(signal.SIGTERM) is before_handlers
    assert supervisor.stop_requests == 2
    assert seen.of(Stopping) == [Stopping(kill=False), Stopping(kill=True)]
    wait_for(lambda: not alive(child), 10, "the experiment killed")
    job, state = pg_store.job(job_id)
    assert (job.status, job.priority, job.attempts, job.worker_id) == \
        (Status.START, RESTART_PRIORITY, 1, None)
    assert state["step"] >= before and state["stops"] >= 1
    assert kinds(pg_store, job_id) == ["booked", "requeued"]


def test_a_reconnected_listener_makes_a_worker_of_named_tables_look_for_jobs(pg_url):
    """Notices sent while the LISTEN connection was away are lost: its reconnect notice (no
    channel) must make the worker poll, also when it books from named tables only."""
    from dbdict_worker.db.listen import RECONNECTED
    from dbdict_worker.db.workers import JOBS_CHANNEL
    from dbdict_worker.worker.events import JobsReady

    store = Store.open(pg_url, retry_seconds=5)
    try:
        supervisor = Supervisor(store, WorkerConfig(tables=["t1"], poll_only=True))
        supervisor._on_listen("", RECONNECTED)
        assert isinstance(supervisor.messages.get_nowait(), JobsReady)
        supervisor._on_listen(JOBS_CHANNEL, "other_table")  # another table's: no wake-up
        assert supervisor.messages.empty()
    finally:
        store.close()
