"""Store behaviour on a real PostgreSQL that the other store tests leave out: the table named
in the URL, a retry after the server dropped the connections, how many round trips a bulk
enqueue costs, one NOTIFY per enqueue, and the value index behind ``key = value`` filters."""
from __future__ import annotations

import threading

import psycopg2
import sqlalchemy as sa
from sqlalchemy import event

from dbdict_worker.constants import Status
from dbdict_worker.db import workers as workerq
from dbdict_worker.store import Store
from tests.support.waiting import wait_for


def _libpq(url: str) -> str:
    return url.replace("+psycopg2", "")


# ---------------------------------------------------------------------------------------------
# postgresql://.../db/TABLE


def test_table_named_in_the_url_is_the_default_table(pg_url):
    with Store.open(pg_url + "/mytab", retry_seconds=5) as store:
        assert store.table == "mytab"
        created = store.enqueue("pkg.exp", [{"x": 1}, {"x": 2}]).created
        assert store.tables() == ["mytab"]
        assert [j.table for j in store.jobs()] == ["mytab", "mytab"]
        store.enqueue("pkg.exp", [{"x": 1}], table="other")
        assert store.tables() == ["mytab", "other"]
        # Reads default to the URL's table too; booking as well.
        assert [j.id for j in store.jobs()] == created
        assert [b.job.id for b in store.book("w", "h", n=5)] == created
    with Store.open(pg_url, retry_seconds=5) as everything:
        assert everything.table is None
        assert len(everything.jobs()) == 3


# ---------------------------------------------------------------------------------------------
# Transparent retry after the server dropped our connections


def _terminate_others(url: str) -> int:
    """Kill every other backend of this database from a separate connection, as a server
    restart or an administrator would; returns how many were killed."""
    conn = psycopg2.connect(_libpq(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                        "FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            killed = cur.fetchone()[0]

            def none_left() -> bool:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid <> pg_backend_pid()")
                return cur.fetchone()[0] == 0
            wait_for(none_left, timeout=10, what="the terminated backends to exit")
        return killed
    finally:
        conn.close()


def test_store_calls_survive_terminated_connections(pg_store, pg_url):
    (first,) = pg_store.enqueue("pkg.exp", [{"x": 1}]).created  # a connection is pooled now
    assert _terminate_others(pg_url) >= 1
    # A write on the dead pooled connection: retried on a new one, done exactly once.
    (second,) = pg_store.enqueue("pkg.exp", [{"x": 2}]).created
    assert pg_store.retry.recovered_at is not None, "the first attempt failed and was retried"
    assert [(j.id, j.status) for j in pg_store.jobs()] == [(first, Status.START),
                                                          (second, Status.START)]
    # A read, and the queue core, after another drop.
    assert _terminate_others(pg_url) >= 1
    assert pg_store.job(second)[1] == {"x": 2}
    assert _terminate_others(pg_url) >= 1
    (booked,) = pg_store.book("w", "h", n=1)
    assert booked.job.id == first
    assert _terminate_others(pg_url) >= 1
    pg_store.finish(booked.token, Status.DONE, state={"x": 1, "result": 3})
    job, state = pg_store.job(first)
    assert job.status == Status.DONE and state == {"x": 1, "result": 3}


# ---------------------------------------------------------------------------------------------
# Bulk enqueue: a few round trips, not one per job


class _CountingCursor(psycopg2.extensions.cursor):
    """A real psycopg2 cursor that counts the calls that talk to the server."""

    calls: list[str] = []
    lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self.lock:
            self.calls.append(what)

    def execute(self, query, vars=None):  # noqa: A002
        self._count("execute")
        return super().execute(query, vars)

    def executemany(self, query, vars_list):
        self._count("executemany")
        return super().executemany(query, vars_list)

    def copy_expert(self, sql, file, size=8192):
        self._count("copy")
        return super().copy_expert(sql, file, size)

    def copy_from(self, *args, **kwargs):
        self._count("copy")
        return super().copy_from(*args, **kwargs)


def _count_round_trips(store: Store) -> tuple[list[str], list[str]]:
    """(SQL statements SQLAlchemy sends, DBAPI calls: execute, executemany and COPY) from
    now on; every connection made from now on uses the counting cursor."""
    statements: list[str] = []
    calls: list[str] = []
    _CountingCursor.calls = calls

    @event.listens_for(store.engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.cursor_factory = _CountingCursor

    @event.listens_for(store.engine, "before_cursor_execute")
    def _on_execute(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append(statement)

    store.engine.dispose()  # pooled connections predate the counting cursor
    return statements, calls


def test_bulk_enqueue_is_a_few_round_trips(pg_store):
    statements, calls = _count_round_trips(pg_store)
    states = [{"i": i, "lr": 0.1 * (i % 7), "name": f"run-{i}", "model.width": 64}
              for i in range(5000)]
    result = pg_store.enqueue("pkg.exp", states, table="bulk")
    assert len(result.created) == 5000 and result.skipped == 0
    assert len(statements) <= 15, statements
    assert len(calls) <= 20, calls
    assert calls.count("copy") <= 5
    # Everything arrived: 5000 jobs with 4 typed keys each.
    with pg_store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 5000
        assert conn.execute(sa.text("SELECT count(*) FROM state")).scalar() == 20000
    _, last = pg_store.job(result.created[-1])
    assert last == {"i": 4999, "lr": 0.1 * (4999 % 7), "name": "run-4999", "model.width": 64}
    # The same sweep again is all duplicates, still in a few round trips.
    del statements[:], calls[:]
    again = pg_store.enqueue("pkg.exp", states, table="bulk")
    assert again.created == [] and again.skipped == 5000
    assert len(statements) <= 15 and len(calls) <= 20, (statements, calls)


# ---------------------------------------------------------------------------------------------
# One NOTIFY per enqueue


def _listener(url: str):
    conn = psycopg2.connect(_libpq(url))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {workerq.JOBS_CHANNEL}")
    return conn


def _notifications_until_sentinel(listener, url: str) -> list[tuple[str, str]]:
    """Every notification the listener got before a sentinel sent now from another
    connection: notifications arrive in commit order, so nothing sent by an earlier
    transaction can come after it."""
    sentinel = "sentinel-end"
    sender = psycopg2.connect(_libpq(url))
    try:
        sender.autocommit = True
        with sender.cursor() as cur:
            cur.execute("SELECT pg_notify(%s, %s)", (workerq.JOBS_CHANNEL, sentinel))
    finally:
        sender.close()
    got: list[tuple[str, str]] = []

    def sentinel_seen() -> bool:
        listener.poll()
        while listener.notifies:
            n = listener.notifies.pop(0)
            got.append((n.channel, n.payload))
        return (workerq.JOBS_CHANNEL, sentinel) in got
    wait_for(sentinel_seen, timeout=10, what="the sentinel notification")
    return got[: got.index((workerq.JOBS_CHANNEL, sentinel))]


def test_one_notification_per_enqueue(pg_store, pg_url):
    listener = _listener(pg_url)
    try:
        statements, _ = _count_round_trips(pg_store)
        created = pg_store.enqueue("pkg.exp", [{"i": i} for i in range(1000)],
                                   table="sweep1").created
        assert len(created) == 1000
        assert sum("pg_notify" in s for s in statements) == 1, "one NOTIFY sent, not one per job"
        assert _notifications_until_sentinel(listener, pg_url) == [
            (workerq.JOBS_CHANNEL, "sweep1")]

        # Nothing new (all duplicates): nobody is woken up.
        assert pg_store.enqueue("pkg.exp", [{"i": i} for i in range(1000)],
                                table="sweep1").skipped == 1000
        assert _notifications_until_sentinel(listener, pg_url) == []

        # A requeue of many jobs is one transaction, one notification too.
        pg_store.cancel(tables="sweep1")
        del statements[:]
        assert len(pg_store.requeue(tables="sweep1")) == 1000
        assert sum("pg_notify" in s for s in statements) == 1
        assert _notifications_until_sentinel(listener, pg_url) == [(workerq.JOBS_CHANNEL, "")]
    finally:
        listener.close()


# ---------------------------------------------------------------------------------------------
# key = value filters use the state value index


def test_where_filter_uses_the_state_value_index(pg_store):
    ids = pg_store.enqueue("pkg.exp", [{"i": i, "lr": (i % 300) / 1000, "opt": "adam"}
                                       for i in range(3000)]).created
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE jobs"))
        conn.execute(sa.text("ANALYZE state"))
        conn.execute(sa.text("ANALYZE job_tables"))
    # Capture the exact query `dbdict list --where lr=0.1` runs.
    captured: list[tuple[str, object]] = []

    @event.listens_for(pg_store.engine, "before_cursor_execute")
    def _on_execute(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        captured.append((statement, parameters))

    found = pg_store.jobs_with_state(where=[("lr", 0.1)])
    event.remove(pg_store.engine, "before_cursor_execute", _on_execute)
    assert [j.id for j, _ in found] == [ids[i] for i in range(100, 3000, 300)]
    assert all(s["lr"] == 0.1 for _, s in found)
    (statement, parameters), = [(s, p) for s, p in captured
                                if "EXISTS" in s and "FROM jobs JOIN job_tables" in s]

    raw = pg_store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.close()
    finally:
        raw.close()
    assert "state_value" in plan, plan
    assert "Seq Scan on state" not in plan, plan



def test_a_bulk_enqueue_into_a_new_table_leaves_booking_reading_the_ready_index(pg_store):
    """With no statistics the planner takes a freshly filled jobs table for a few rows and
    books through a bitmap scan and a sort; the enqueue refreshes them itself."""
    from tests.soak.checks import booking_plan, plan_problem

    ids = pg_store.enqueue("pkg.exp", [{"i": i} for i in range(2000)], table="fresh").created
    plan = booking_plan(pg_store.engine)  # a worker that books from any table
    assert plan_problem(plan) is None, plan
    with pg_store.engine.connect() as conn:
        known = conn.execute(sa.text(
            "SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass")).scalar()
    assert known >= len(ids)
