"""The ``job_logs`` table: the tail of each attempt's stdout and stderr.

One row per (job, attempt, stream). A worker upserts the rows of all its jobs whose output
grew in one statement per flush (:func:`upsert`); ``dbdict logs`` reads them (:func:`select`);
deleting a job deletes its rows (``queries.delete``). Each function takes an open connection
inside a transaction the caller owns.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dbdict_worker.db.models import utc
from dbdict_worker.db.schema import db_now, job_logs, jobs

#: Rows per statement on SQLite (its bound on parameters).
CHUNK = 500


@dataclasses.dataclass(frozen=True)
class LogTail:
    """The kept tail of one attempt's stream; ``size`` is how many bytes the attempt wrote
    to it in all (more than the tail holds when it wrote more than the worker keeps)."""

    job_id: int
    attempt: int
    stream: str
    tail: str
    size: int
    updated_at: dt.datetime | None = None


def upsert(conn: Connection, rows: Sequence[LogTail]) -> int:
    """Insert or replace these rows, one statement per :data:`CHUNK`; a row never replaces
    a larger one (a late retry cannot move a tail back), and rows of jobs that no longer
    exist (deleted while they ran) are left out. Returns how many rows were written."""
    latest: dict[tuple[int, int, str], LogTail] = {}
    for row in rows:  # one row per key: a statement may not update a row twice
        latest[(row.job_id, row.attempt, row.stream)] = row
    values = [(r.job_id, r.attempt, r.stream, r.tail, r.size) for r in latest.values()]
    if not values:
        return 0
    if conn.dialect.name == "postgresql":
        # Output tails are a convenience: their commit need not wait for the WAL flush (a
        # database crash may lose the last second of them, never a status). A worker writes
        # one per ending job; this keeps that write off the disk's critical path.
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        # One statement, whatever the number of rows (one array per column: compiled once):
        # the rows, less those of jobs that no longer exist.
        columns = dict(zip(_NAMES, map(list, zip(*values))))
        return conn.execute(_PG_UPSERT, columns).rowcount
    # SQLite has no arrays: look the jobs up first, then one multi-row INSERT.
    ids = sorted({v[0] for v in values})
    existing: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        existing.update(conn.execute(
            sa.select(jobs.c.id).where(jobs.c.id.in_(ids[start:start + CHUNK]))).scalars())
    kept = [dict(zip(_NAMES, v)) for v in values if v[0] in existing]
    written = 0
    for start in range(0, len(kept), CHUNK):
        written += conn.execute(_on_conflict(
            sqlite.insert(job_logs).values(kept[start:start + CHUNK]))).rowcount
    return written


def _on_conflict(stmt):  # noqa: ANN001, ANN202 (a dialect's Insert)
    """Replace an existing row's tail, unless it is larger (an older write retried late)."""
    return stmt.on_conflict_do_update(
        index_elements=[job_logs.c.job_id, job_logs.c.attempt, job_logs.c.stream],
        set_={"tail": stmt.excluded.tail, "size": stmt.excluded.size, "updated_at": db_now()},
        where=job_logs.c.size <= stmt.excluded.size)


_NAMES = ["job_id", "attempt", "stream", "tail", "size"]
_TYPES = [sa.BigInteger, sa.Integer, sa.Text, sa.Text, sa.BigInteger]
_rows = sa.func.unnest(*(sa.bindparam(n, type_=postgresql.ARRAY(t)) for n, t in
                         zip(_NAMES, _TYPES))).table_valued(*_NAMES).render_derived("v")
_PG_UPSERT = _on_conflict(postgresql.insert(job_logs).from_select(
    _NAMES, sa.select(*_rows.c).where(sa.exists().where(jobs.c.id == _rows.c.job_id))))


def select(conn: Connection, job_id: int, attempt: int | None = None) -> list[LogTail]:
    """The rows of one attempt of a job (None: its latest attempt that has any), by stream."""
    if attempt is None:
        attempt = conn.execute(sa.select(sa.func.max(job_logs.c.attempt))
                               .where(job_logs.c.job_id == job_id)).scalar()
        if attempt is None:
            return []
    rows = conn.execute(
        sa.select(job_logs.c.job_id, job_logs.c.attempt, job_logs.c.stream, job_logs.c.tail,
                  job_logs.c.size, job_logs.c.updated_at)
        .where(job_logs.c.job_id == job_id, job_logs.c.attempt == attempt)
        .order_by(job_logs.c.stream.desc()))  # stdout first
    return [LogTail(r.job_id, r.attempt, r.stream, r.tail, int(r.size), utc(r.updated_at))
            for r in rows]

