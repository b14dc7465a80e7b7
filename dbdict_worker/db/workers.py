"""Queries on the ``workers`` table, and the wake-up notifications (PostgreSQL NOTIFY).

Like :mod:`.queries`: each function takes a connection inside the caller's transaction and
never commits.
"""
from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dbdict_worker.constants import Status
from dbdict_worker.db.models import Token, WorkerRow, utc
from dbdict_worker.db.queries import db_clock
from dbdict_worker.db.queue import heartbeat
from dbdict_worker.db.schema import db_ago, db_now, jobs, workers

#: NOTIFY channel: jobs became ready (payload: the table name, or "" for any table).
JOBS_CHANNEL = "dbdict_jobs"
#: NOTIFY channel: a drain was requested (payload: a worker id, or "" for several).
CONTROL_CHANNEL = "dbdict_control"

RUNNING, DRAINING, STOPPING, STOPPED = "running", "draining", "stopping", "stopped"
#: A running worker that books nothing for a while because its own environment fails; its
#: state is ``degraded: <why>``.
DEGRADED = "degraded"


def notify(conn: Connection, channel: str, payload: str = "") -> None:
    """Send a notification when the transaction commits (PostgreSQL; nothing on SQLite).
    PostgreSQL folds identical notifications of one transaction into one."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(channel, payload)))


def register(conn: Connection, *, worker_id: str, host: str, pid: int, slots: int,
             tables: Sequence[str] | None) -> None:
    """Record a starting worker."""
    conn.execute(sa.insert(workers).values(
        id=worker_id, host=host, pid=pid, slots=slots,
        tables=",".join(tables) if tables else None, state=RUNNING,
        started_at=db_now(), heartbeat_at=db_now()))


def beat(conn: Connection, worker_id: str, state: str,
         tokens: Sequence[Token]) -> tuple[bool, set[int], set[int]]:
    """One heartbeat: the worker's row and its jobs' rows. Returns (drain requested?, ids of
    the jobs it still owns, those of them a search's pruner asked to end)."""
    drain = conn.execute(
        sa.update(workers).where(workers.c.id == worker_id)
        .values(heartbeat_at=db_now(), state=state)
        .returning(workers.c.drain_requested)).scalar()
    owned = heartbeat(conn, worker_id, tokens)
    return bool(drain), set(owned), {job_id for job_id, prune in owned.items() if prune}


def set_state(conn: Connection, worker_id: str, state: str) -> None:
    """Change a worker's state (``stopped`` also records when)."""
    values = {"state": state, "heartbeat_at": db_now()}
    if state == STOPPED:
        values["stopped_at"] = db_now()
    conn.execute(sa.update(workers).where(workers.c.id == worker_id).values(**values))


def _running(worker_id: str | None, host: str | None) -> list[sa.ColumnElement[bool]]:
    """Workers that book (running or degraded): one, those of a host, or all."""
    cond = [sa.or_(workers.c.state == RUNNING, workers.c.state.startswith(DEGRADED + ":"))]
    if worker_id is not None:
        cond.append(workers.c.id == worker_id)
    if host is not None:
        cond.append(workers.c.host == host)
    return cond


def request_drain(conn: Connection, *, worker_id: str | None = None,
                  host: str | None = None, lease: float | None = None) -> list[str]:
    """Ask running workers (one, those of a host, or all) to drain; returns their ids.
    With ``lease``: only those whose heartbeat is at most that old (a lost worker cannot
    drain)."""
    cond = _running(worker_id, host)
    if lease is not None:
        cond.append(workers.c.heartbeat_at >= db_ago(lease))
    ids = sorted(conn.execute(
        sa.update(workers).where(*cond).values(drain_requested=True)
        .returning(workers.c.id)).scalars())
    if ids:
        notify(conn, CONTROL_CHANNEL, ids[0] if len(ids) == 1 else "")
    return ids


def lost(conn: Connection, lease: float, *, worker_id: str | None = None,
         host: str | None = None) -> list[str]:
    """Ids of the workers that :func:`request_drain` would ask but that are lost: their
    row says running, their heartbeat is older than ``lease`` (killed, machine gone)."""
    cond = [*_running(worker_id, host), workers.c.heartbeat_at < db_ago(lease)]
    return sorted(conn.execute(sa.select(workers.c.id).where(*cond)).scalars())


def select(conn: Connection, *, include_stopped: bool = False) -> list[WorkerRow]:
    """Workers (not stopped ones unless asked), with their heartbeat age on the database
    clock and the ids of the jobs they run."""
    now = db_clock(conn)
    stmt = sa.select(workers).order_by(workers.c.host, workers.c.started_at)
    if not include_stopped:
        stmt = stmt.where(workers.c.state != STOPPED)
    rows = conn.execute(stmt).all()
    running: dict[str, list[int]] = {}
    for job_id, worker_id in conn.execute(
            sa.select(jobs.c.id, jobs.c.worker_id)
            .where(jobs.c.status == Status.RUNNING, jobs.c.worker_id.in_([r.id for r in rows]))
            .order_by(jobs.c.id)):
        running.setdefault(worker_id, []).append(job_id)
    out = []
    for r in rows:
        beat_at = utc(r.heartbeat_at)
        age = (now - beat_at).total_seconds() if beat_at else None
        out.append(WorkerRow(r.id, r.host, r.pid, r.slots, r.tables, r.state,
                             bool(r.drain_requested), utc(r.started_at), beat_at,
                             utc(r.stopped_at), age, tuple(running.get(r.id, ()))))
    return out

