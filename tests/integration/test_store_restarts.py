"""Delayed requeues and the restart count, at the store (PostgreSQL and SQLite): a job whose
``not_before`` is ahead is not booked, and is once that time has come (database clock)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from dbdict_worker.constants import DEFAULT_MAX_RESTARTS, RESTART_PRIORITY, Status
from dbdict_worker.db import queue
from dbdict_worker.errors import UsageError
from tests.support.waiting import wait_for

DELAY = 2.0


def test_a_delayed_job_is_booked_only_once_its_time_has_come(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}]).created
    (other,) = store.enqueue("pkg.exp", [{"x": 2}], priority=0.5).created
    b = store.book("w", "h")[0]
    assert b.job.id == job_id
    store.requeue_job(b.token, state={"x": 1}, delay=DELAY, restarts=1)
    job = store.job(job_id)[0]
    assert job.status == Status.START and job.restarts == 1 and job.priority == RESTART_PRIORITY
    # not_before and updated_at come from the same statement's clock.
    assert abs((job.not_before - job.updated_at).total_seconds() - DELAY) < 0.01
    # Ahead in priority but not due: the booking passes over it to the next ready job.
    assert [x.job.id for x in store.book("w", "h", n=5)] == [other]
    due = store.next_due()
    assert due is not None and 0 < due <= DELAY
    assert store.next_due(tables=["default"]) is not None
    booked = wait_for(lambda: store.book("w", "h"), timeout=DELAY + 20,
                      what="the delayed job to be booked")
    assert [x.job.id for x in booked] == [job_id]
    again = booked[0].job
    assert again.not_before is None and again.restarts == 1  # booking keeps the count
    assert again.booked_at >= job.not_before  # both by the database clock
    requeued = [e for e in store.events(job_id) if e.kind == "requeued"][-1]
    assert f"not before now + {DELAY:.3g} s" in requeued.detail
    assert store.next_due() is None


def test_a_requeue_sets_keeps_or_resets_the_count(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}], max_restarts=4).created
    b = store.book("w", "h")[0]
    assert (b.job.restarts, b.job.max_restarts) == (0, 4)
    store.requeue_job(b.token, restarts=3)
    b = store.book("w", "h")[0]  # no delay: ready at once
    assert b.job.restarts == 3
    store.requeue_job(b.token, reason="stopped")  # restarts=None: the count stays
    b = store.book("w", "h")[0]
    assert b.job.restarts == 3 and store.job(job_id)[0].not_before is None
    store.requeue_job(b.token, restarts=0)
    assert store.job(job_id)[0].restarts == 0


def test_a_user_requeue_makes_a_job_ready_now_with_a_fresh_count(store):
    (job_id,) = store.enqueue("pkg.exp", [{"x": 1}]).created
    b = store.book("w", "h")[0]
    store.requeue_job(b.token, delay=600, restarts=2)
    assert store.book("w", "h") == []
    assert store.cancel(ids=[job_id]) == [job_id]
    assert store.requeue(ids=[job_id]) == [job_id]
    job = store.job(job_id)[0]
    assert (job.status, job.restarts, job.not_before) == (Status.START, 0, None)
    assert [x.job.id for x in store.book("w", "h")] == [job_id]


def test_max_restarts_is_stored_per_job_and_checked(store):
    default, = store.enqueue("pkg.exp", [{"x": 1}]).created
    none, = store.enqueue("pkg.exp", [{"x": 2}], max_restarts=0).created
    assert store.job(default)[0].max_restarts == DEFAULT_MAX_RESTARTS
    assert store.job(none)[0].max_restarts == 0
    with pytest.raises(UsageError, match="max_restarts"):
        store.enqueue("pkg.exp", [{"x": 3}], max_restarts=-1)


def test_booking_steps_over_delayed_jobs_in_ready_index_order(pg_store):
    """The real booking statement, with delayed jobs at the head of the ready index: it still
    reads the index in booking order (no sort), stepping over them."""
    pg_store.enqueue("pkg.exp", [{"i": i} for i in range(3000)], table="big")
    for b in pg_store.book("w", "h", n=50):
        pg_store.requeue_job(b.token, delay=600, restarts=1)
    (stmt,) = queue.booking_statements("postgresql", False)

    def explain(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        return "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement, parameters

    with pg_store.engine.connect() as conn:
        conn.execute(sa.text("ANALYZE jobs"))
        conn.commit()
        with conn.begin() as trans:  # EXPLAIN ANALYZE books: undone below
            event.listen(conn, "before_cursor_execute", explain, retval=True)
            plan = "\n".join(r[0] for r in conn.execute(
                stmt, {"n": 4, "new_worker": "w2", "new_host": "h2"}))
            event.remove(conn, "before_cursor_execute", explain)
            trans.rollback()
    assert "Index Scan using jobs_ready on jobs" in plan and "Sort" not in plan, plan
    assert "Rows Removed by Filter: 50" in plan, plan
