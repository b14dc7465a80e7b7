"""Housekeeping around the queue, as the bench runs it (PostgreSQL): removing job tables,
vacuuming and refreshing the planner's statistics, the booking's query plan, and a table
filled with finished jobs."""
from __future__ import annotations

from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from dbdict_worker.constants import Status
from dbdict_worker.db.queue import booking_statements
from dbdict_worker.db.schema import job_tables, metadata

#: The tables a bench's jobs leave dead rows in.
JOB_ROW_TABLES = ("jobs", "state", "events")


def drop_job_tables(conn: Connection, names: Iterable[str]) -> None:
    """Remove the named job tables; their jobs must be deleted first (jobs reference them)."""
    conn.execute(sa.delete(job_tables).where(job_tables.c.name.in_(list(names))))


def _table_list(conn: Connection | Engine, tables: Sequence[str]) -> str:
    unknown = [t for t in tables if t not in metadata.tables]
    if unknown:
        raise ValueError(f"not dbdict tables: {unknown}")
    return ", ".join(conn.dialect.identifier_preparer.quote(t) for t in tables)


def vacuum_analyze(engine: Engine, tables: Sequence[str] = JOB_ROW_TABLES) -> None:
    """``VACUUM (ANALYZE)`` of ``tables``: reclaim their dead rows and refresh the planner's
    statistics. VACUUM cannot run in a transaction: this takes a connection of its own."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM (ANALYZE) {_table_list(conn, tables)}")


def analyze(conn: Connection, tables: Sequence[str] = ("jobs",)) -> None:
    """Refresh the planner's statistics of ``tables`` (in the caller's transaction)."""
    conn.exec_driver_sql(f"ANALYZE {_table_list(conn, tables)}")


#: Enqueues smaller than this never refresh statistics themselves (autovacuum will).
STATS_MIN_ROWS = 100


def refresh_stale_stats(conn: Connection, added: int) -> bool:
    """``ANALYZE jobs`` when the ``added`` new jobs outnumber the rows its statistics know of
    (a new or emptied table after a bulk enqueue): with no statistics the planner takes the
    table for a few rows and books through a bitmap scan and a sort instead of reading the
    ready index in order, until autovacuum gets to it. PostgreSQL only; True if it ran.
    Gives up at once (False) when another session holds the table's statistics lock."""
    if conn.dialect.name != "postgresql" or added < STATS_MIN_ROWS:
        return False
    known = conn.exec_driver_sql(
        "SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass").scalar()
    if known is not None and known >= added:
        return False
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            conn.exec_driver_sql("ANALYZE jobs")
    except sa.exc.OperationalError:  # lock_timeout: autovacuum or another enqueue is at it
        return False
    return True


_FINISHED_JOBS = sa.text(
    "INSERT INTO jobs (table_id, experiment, status, params_hash, finished_at) "
    "SELECT :table_id, :experiment, :status, md5(g::text), now() "
    "FROM generate_series(1, :n) AS g")


def add_finished_jobs(conn: Connection, table_id: int, n: int,
                      experiment: str = "bench.done") -> None:
    """Add ``n`` DONE jobs (no state, no events) to a table: the history a long-lived table
    accumulates, which booking must not slow down for."""
    conn.execute(_FINISHED_JOBS, {"table_id": table_id, "experiment": experiment,
                                  "status": int(Status.DONE), "n": n})


class _Explain(Executable, ClauseElement):
    """``EXPLAIN`` of a statement, executed with the statement's own parameters."""

    inherit_cache = False

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler, **kw) -> str:  # noqa: ANN001
    return "EXPLAIN " + compiler.process(element.statement, **kw)


def booking_plan(conn: Connection, table_ids: Sequence[int]) -> str:
    """The plan PostgreSQL chooses for booking one job of ``table_ids`` (EXPLAIN of the
    booking statement itself; nothing is booked)."""
    (booking,) = booking_statements(conn.dialect.name, True)
    params = {"n": 1, "table_ids": list(table_ids), "new_worker": "explain",
              "new_host": "explain"}
    return "\n".join(conn.execute(_Explain(booking), params).scalars())
