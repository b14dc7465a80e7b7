"""The ``metrics`` table: what experiments report with ``channel.report(step, **metrics)``;
and what a search's pruner does with them: :func:`request_prune`.

One row per (job, attempt, step, key). A worker writes the reports of all its jobs in one
statement per flush (:func:`insert`, an upsert: a repeated key keeps the latest value);
readers use :func:`select`. Each function takes an open connection inside a transaction the
caller owns.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dbdict_worker.db.jobrows import JobRowUpsert
from dbdict_worker.db.models import MetricRow, utc
from dbdict_worker.constants import Status
from dbdict_worker.db.queries import add_events
from dbdict_worker.db.schema import db_now, jobs, metrics

#: Ids per IN list when reading.
ID_CHUNK = 1000


def insert(conn: Connection, rows: Sequence[MetricRow]) -> int:
    """Insert these rows, or replace the value of a (job, attempt, step, key) already there;
    rows of jobs that no longer exist (deleted while they ran) are left out. One statement on
    PostgreSQL, one per chunk on SQLite. Returns how many rows were written."""
    return _UPSERT(conn, [(r.job_id, r.attempt, r.step, r.key, r.value) for r in rows])


def _on_conflict(stmt):  # noqa: ANN001, ANN202 (a dialect's Insert)
    """A repeated (job, attempt, step, key) keeps the latest value."""
    return stmt.on_conflict_do_update(
        index_elements=[metrics.c.job_id, metrics.c.attempt, metrics.c.step, metrics.c.key],
        set_={"value": stmt.excluded.value, "at": db_now()})


_UPSERT = JobRowUpsert(metrics, ["job_id", "attempt", "step", "key", "value"],
                       [sa.BigInteger, sa.Integer, sa.BigInteger, sa.Text, sa.Float], 4,
                       _on_conflict)


def select(conn: Connection, job_ids: Iterable[int], *, attempt: int | None = None,
           keys: Iterable[str] | None = None) -> list[MetricRow]:
    """The rows of these jobs (of one ``attempt`` if given; of some ``keys`` if given),
    ordered by job, attempt, step and key."""
    ids = sorted(set(job_ids))
    wanted = sorted(set(keys)) if keys is not None else None
    out: list[MetricRow] = []
    for start in range(0, len(ids), ID_CHUNK):
        cond = [metrics.c.job_id.in_(ids[start:start + ID_CHUNK])]
        if attempt is not None:
            cond.append(metrics.c.attempt == attempt)
        if wanted is not None:
            cond.append(metrics.c.key.in_(wanted))
        rows = conn.execute(
            sa.select(metrics.c.job_id, metrics.c.attempt, metrics.c.step, metrics.c.key,
                      metrics.c.value, metrics.c.at)
            .where(*cond)
            .order_by(metrics.c.job_id, metrics.c.attempt, metrics.c.step, metrics.c.key))
        out += [MetricRow(r.job_id, r.attempt, int(r.step), r.key,
                          None if r.value is None else float(r.value), utc(r.at))
                for r in rows]
    return out


def request_prune(conn: Connection, ids: Sequence[int], reason: str) -> list[int]:
    """A search's pruner ends these jobs early: a RUNNING one is flagged (its worker learns
    it at its next heartbeat and tells the experiment), a START one ends PRUNED at once.
    Others (already ended, or flagged) are left alone. Returns the ids changed."""
    wanted = sorted(set(ids))
    changed: list[int] = []
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start:start + 1000]
        flagged = list(conn.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(chunk), jobs.c.status == Status.RUNNING,
                   jobs.c.prune_requested.is_(sa.false()))
            .values(prune_requested=True, updated_at=db_now())
            .returning(jobs.c.id)).scalars())
        ended = list(conn.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(chunk), jobs.c.status == Status.START)
            .values(status=Status.PRUNED, finished_at=db_now(), updated_at=db_now(),
                    not_before=sa.null())
            .returning(jobs.c.id)).scalars())
        add_events(conn, "prune", sorted(flagged), detail=f"{reason}; its worker stops it")
        add_events(conn, "prune", sorted(ended), detail=f"{reason}; now PRUNED (not started)")
        changed += flagged + ended
    return sorted(changed)
