"""At most one running copy of a job, and no job stranded, with real ``dbdict-worker start``
processes, real signals and a real network cut.

Each copy of a job run by :mod:`dbdict_worker.examples.intervals` logs when it runs to a file
outside its workdir; the tests check that no two copies' running intervals overlap, whatever
happened to the worker that ran the first one (killed, frozen, cut off from the database).
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbdict_worker.constants import Status
from dbdict_worker.examples.intervals import copies
from tests.acceptance.workers import alive
from tests.support.proxy import Proxy
from tests.support.waiting import wait_for

LOOP = "dbdict_worker.examples.loop"
INTERVALS = "dbdict_worker.examples.intervals"
LEASE = 4.0
ARGS = ("--heartbeat", "0.5", "--lease", str(LEASE), "--poll-interval", "0.5", "--until-empty")


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def first_copy(log: Path) -> int:
    """The pid of the first copy that logged to ``log``."""
    text = wait_for(lambda: log.exists() and "alive" in log.read_text() and log.read_text(),
                    60, "a copy of the job running")
    return int(text.splitlines()[0].split()[2])


def assert_one_copy_at_a_time(log: Path, n: int) -> None:
    """``n`` copies logged, and none ran while another did."""
    spans = sorted(copies(log.read_text()).values())
    assert len(spans) == n, spans
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end < start, f"two copies ran at once: {spans}"


def owner(store, job_id: int) -> tuple[str | None, int]:  # noqa: ANN001
    job = store.job(job_id)[0]
    return job.worker_id, job.attempts


@pytest.fixture
def no_stuck_transactions(pg_url):
    """The database ends the transactions of a session that went silent in the middle of one
    (a frozen or cut-off worker), so that their row locks do not hold the job back."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        name = conn.exec_driver_sql("SELECT current_database()").scalar()
        conn.exec_driver_sql(
            f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = \'2s\'')
    engine.dispose()


@pytest.mark.slow
def test_until_empty_workers_finish_the_sweep_when_one_is_killed(pg_url, pg_store, workers,
                                                                 tmp_path):
    ids = pg_store.enqueue(LOOP, [{"total": 80, "sleep": 0.05, "i": i}
                                  for i in range(3)]).created
    started = [workers(pg_url, f"w{k}", *ARGS) for k in range(3)]
    running = wait_for(lambda: len(jobs := pg_store.jobs(statuses=["RUNNING"])) == 3 and jobs,
                       60, "3 running jobs")
    victim = started[0]
    (lost,) = [j.id for j in running if f"-{victim.pid}-" in (j.worker_id or "")]
    wait_for(lambda: pg_store.job(lost)[1].get("step", 0) > 3, 30, "the victim's progress")
    (starts,) = tmp_path.glob(f"dbdict-jobs/*/*/{lost}/starts.log")
    orphan = int(starts.read_text().split()[-1])
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    # Its copy, orphaned, is asked to stop, and killed at its lease deadline at the latest.
    wait_for(lambda: not alive(orphan), LEASE + 20, "the orphaned copy gone")
    survivors = started[1:]
    # The survivors finish theirs, and neither exits while the dead worker's job is RUNNING:
    # one of them rescues it once its lease has passed and runs it.
    wait_for(lambda: pg_store.counts() == {("default", Status.DONE): 3}, 120, "all DONE")
    for w in survivors:
        assert w.wait(60) == 0
    for job, state in pg_store.jobs_with_state():
        assert state["result"] == 80 * 81 // 2
        assert (job.attempts, job.losses) == ((2, 1) if job.id == lost else (1, 0)), job
    assert sorted(ids) == sorted(j.id for j in pg_store.jobs())
    assert any("waiting for them" in w.log() for w in survivors)


TOTAL = 150


def first_worker_running(pg_store, workers, url: str, log: Path):  # noqa: ANN001
    """One job, and worker A on ``url`` running it: (job id, A, its copy's pid, A's id)."""
    (job_id,) = pg_store.enqueue(INTERVALS, [{"log": str(log), "total": TOTAL,
                                              "sleep": 0.05}]).created
    a = workers(url, "a", *ARGS)
    a_copy = first_copy(log)
    a_id, _ = owner(pg_store, job_id)
    wait_for(lambda: pg_store.job(job_id)[1].get("step", 0) > 3, 30, "A's progress")
    return job_id, a, a_copy, a_id


def paused_then_taken_over(pg_store, job_id: int, log: Path, a_copy: int,  # noqa: ANN001
                           since: float) -> None:
    """A's copy pauses itself before the lease ends (A's last heartbeat came before
    ``since``), then B takes the job over and its copy runs while A's stays paused."""
    wait_for(lambda: stopped(a_copy), LEASE + 20, "A's copy paused")
    assert copies(log.read_text())[a_copy][1] < since + LEASE
    wait_for(lambda: owner(pg_store, job_id)[1] == 2, 60, "B's takeover")
    wait_for(lambda: len(copies(log.read_text())) == 2, 60, "B's copy running")
    assert stopped(a_copy)


def assert_done_once(pg_store, job_id: int, log: Path, a_id: str) -> None:  # noqa: ANN001
    """DONE with the right result, one copy at a time, nothing of A's written after the
    job was taken from it."""
    job, state = pg_store.job(job_id)
    assert (job.attempts, job.losses, state["result"]) == (2, 1, TOTAL * (TOTAL + 1) // 2)
    assert_one_copy_at_a_time(log, 2)
    events = pg_store.events(job_id)
    lost_at = [e.kind for e in events].index("lost")
    assert all(e.worker_id != a_id for e in events[lost_at:]), events


@pytest.mark.slow
def test_a_frozen_worker_pauses_its_job_and_loses_it_to_another(
        pg_url, pg_store, workers, tmp_path, no_stuck_transactions):
    log = tmp_path / "runs.log"
    job_id, a, a_copy, a_id = first_worker_running(pg_store, workers, pg_url, log)
    a.signal(signal.SIGSTOP)  # Ctrl-Z, a hung node: A cannot renew, nor act
    frozen = time.monotonic()
    b = workers(pg_url, "b", *ARGS)
    paused_then_taken_over(pg_store, job_id, log, a_copy, frozen)
    a.signal(signal.SIGCONT)
    # A learns at its next heartbeat that the job is no longer its own: its copy is killed.
    wait_for(lambda: not alive(a_copy), 30, "A's copy killed")
    a.wait_log("taken away")
    wait_for(lambda: pg_store.job(job_id)[0].status == Status.DONE, 120, "the job DONE")
    assert a.wait(60) == 0 and b.wait(60) == 0
    assert_done_once(pg_store, job_id, log, a_id)


@pytest.mark.slow
def test_a_worker_cut_off_from_the_database_pauses_its_job_and_loses_it(
        pg_url, pg_store, workers, tmp_path, no_stuck_transactions):
    log = tmp_path / "runs.log"
    proxy = Proxy(pg_url)
    try:
        job_id, a, a_copy, a_id = first_worker_running(pg_store, workers, proxy.url, log)
        b = workers(pg_url, "b", *ARGS)  # nothing to book: it waits for A's job (--until-empty)
        b.wait_log("waiting for them")
        proxy.cut(silent=True)  # a pulled cable: nothing flows, no connection is closed
        paused_then_taken_over(pg_store, job_id, log, a_copy, time.monotonic())
        assert a.proc.poll() is None
        proxy.restore()
        # What A sent is delivered at last: it learns the job is gone, kills its copy, and
        # (--until-empty) exits once B has finished the job.
        wait_for(lambda: not alive(a_copy), 60, "A's copy killed")
        wait_for(lambda: pg_store.job(job_id)[0].status == Status.DONE, 120, "the job DONE")
        assert a.wait(90) == 0 and b.wait(60) == 0
    finally:
        proxy.close()
    assert_done_once(pg_store, job_id, log, a_id)
