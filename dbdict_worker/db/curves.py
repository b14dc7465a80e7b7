"""Reading the intermediate metrics (``metrics``: what ``channel.report(step, **metrics)``
sent) for ``Store.metrics``, ``dbdict metrics`` and the dashboard's learning curves. Reads
only; the worker's writes are elsewhere.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dbdict_worker.db.models import Selection
from dbdict_worker.db.schema import jobs, metrics
from dbdict_worker.db.selection import selection_filter


@dataclass(frozen=True)
class Point:
    """One reported value: a job's ``key`` at ``step`` of ``attempt``, written at ``at``."""

    job_id: int
    attempt: int
    step: int
    key: str
    value: float | None
    at: dt.datetime


def _point(row: sa.Row) -> Point:
    job_id, attempt, step, key, value, at = row
    if at.tzinfo is None:  # SQLite keeps UTC without its offset
        at = at.replace(tzinfo=dt.timezone.utc)
    return Point(job_id, attempt, step, key, value, at)


def _select(cond: list[sa.ColumnElement[bool]], *,
            keys: Sequence[str] | None, attempt: int | None) -> sa.Select:
    m = metrics.c
    stmt = sa.select(m.job_id, m.attempt, m.step, m.key, m.value, m.at)
    if keys is not None:
        cond = [*cond, m.key.in_(list(keys))]
    if attempt is not None:
        cond = [*cond, m.attempt == attempt]
    return stmt.where(*cond).order_by(m.job_id, m.step, m.attempt, m.key)


def select(conn: Connection, sel: Selection, *, keys: Sequence[str] | None = None,
           attempt: int | None = None) -> list[Point]:
    """The metrics of the jobs of ``sel`` (only ``keys`` and ``attempt`` if given), by job,
    step, attempt and key: one statement, the selection joined in."""
    cond = selection_filter(sel)
    stmt = _select([], keys=keys, attempt=attempt)
    if cond:  # every job selected: no join needed
        stmt = stmt.join(jobs, jobs.c.id == metrics.c.job_id).where(*cond)
    return [_point(r) for r in conn.execute(stmt)]


def for_jobs(conn: Connection, job_ids: Iterable[int], *, keys: Sequence[str] | None = None,
             limit: int | None = None) -> list[Point]:
    """The metrics of these jobs (their primary key's order), at most ``limit`` rows."""
    ids = list(job_ids)
    if not ids:
        return []
    stmt = _select([metrics.c.job_id.in_(ids)], keys=keys, attempt=None)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_point(r) for r in conn.execute(stmt)]
