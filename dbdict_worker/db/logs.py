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
from sqlalchemy.engine import Connection

from dbdict_worker.db.jobrows import JobRowUpsert
from dbdict_worker.db.models import utc
from dbdict_worker.db.schema import db_now, job_logs


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
    """Insert or replace these rows in one statement (on SQLite one per chunk); a row never
    replaces a larger one (a late retry cannot move a tail back), and rows of jobs that no
    longer exist (deleted while they ran) are left out. Returns how many rows were written."""
    return _UPSERT(conn, [(r.job_id, r.attempt, r.stream, r.tail, r.size) for r in rows])


def _on_conflict(stmt):  # noqa: ANN001, ANN202 (a dialect's Insert)
    """Replace an existing row's tail, unless it is larger (an older write retried late)."""
    return stmt.on_conflict_do_update(
        index_elements=[job_logs.c.job_id, job_logs.c.attempt, job_logs.c.stream],
        set_={"tail": stmt.excluded.tail, "size": stmt.excluded.size, "updated_at": db_now()},
        where=job_logs.c.size <= stmt.excluded.size)


_UPSERT = JobRowUpsert(job_logs, ["job_id", "attempt", "stream", "tail", "size"],
                       [sa.BigInteger, sa.Integer, sa.Text, sa.Text, sa.BigInteger], 3,
                       _on_conflict)


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

