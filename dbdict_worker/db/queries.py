"""The named queries around the queue: job tables, reading jobs (list, show, counts, export),
their history, and the changes a user asks for (cancel, requeue, priority, delete).

Each function takes an open connection (inside a transaction the caller owns), never commits,
and returns plain values or the frozen types of :mod:`.models`. The queue core (enqueue,
booking, saves and releases) is in :mod:`.queue`.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dbdict_worker.constants import PENDING, Status
from dbdict_worker.db import values
# Job and MISSING are also imported from here by records.py, export.py and cli/main.py.
from dbdict_worker.db.models import (
    JOB_COLUMNS,
    MISSING,
    Event,
    Job,
    Selection,
    job_from_row,
    utc,
)
from dbdict_worker.db.schema import db_now, events, job_logs, job_tables, jobs, metrics, state
from dbdict_worker.db.provenance import attach
from dbdict_worker.db.selection import selection_filter

# --------------------------------------------------------------------------------------------
# Tables (named groups of jobs)


def table_ids(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids of the named tables that exist (missing names are simply absent)."""
    names = list(names)
    rows = conn.execute(
        sa.select(job_tables.c.name, job_tables.c.id).where(job_tables.c.name.in_(names))
    )
    return dict(rows.all())


def table_names(conn: Connection) -> list[str]:
    """All job tables, by name."""
    return list(conn.execute(sa.select(job_tables.c.name).order_by(job_tables.c.name)).scalars())


# --------------------------------------------------------------------------------------------
# Reading


def select_jobs(conn: Connection, sel: Selection, *, limit: int | None = None) -> list[Job]:
    """Jobs matching ``sel``, by id."""
    stmt = (
        sa.select(*JOB_COLUMNS)
        .select_from(jobs.join(job_tables))
        .where(*selection_filter(sel))
        .order_by(jobs.c.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [job_from_row(r) for r in conn.execute(stmt)]


def select_state(conn: Connection, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The flat state of each job, keys sorted."""
    out: dict[int, dict[str, Any]] = {i: {} for i in job_ids}
    for chunk_start in range(0, len(job_ids), 5000):
        chunk = job_ids[chunk_start:chunk_start + 5000]
        rows = conn.execute(
            sa.select(state.c.job_id, state.c.key, state.c.vtype, state.c.num, state.c.txt)
            .where(state.c.job_id.in_(chunk))
            .order_by(state.c.job_id, state.c.key)
        )
        for job_id, key, vtype, num, txt in rows:
            out[job_id][key] = values.decode(vtype, num, txt)
    return out


def iter_jobs_with_state(conn: Connection, sel: Selection, *, batch: int = 2000):
    """Yield ``(Job, flat_state)`` for every job matching ``sel`` in id order, reading in
    batches so a large table is never held in memory at once (submissions attached)."""
    last_id = None
    seen: dict = {}  # submissions read so far: a sweep's pages share one
    while True:
        stmt = (
            sa.select(*JOB_COLUMNS)
            .select_from(jobs.join(job_tables))
            .where(*selection_filter(sel))
            .order_by(jobs.c.id)
            .limit(batch)
        )
        if last_id is not None:
            stmt = stmt.where(jobs.c.id > last_id)
        page = [job_from_row(r) for r in conn.execute(stmt)]
        if not page:
            return
        page = attach(conn, page, seen)
        states = select_state(conn, [j.id for j in page])
        for j in page:
            yield j, states[j.id]
        last_id = page[-1].id


def count_by_status(conn: Connection, sel: Selection) -> dict[tuple[str, Status], int]:
    """Number of jobs per (table, status)."""
    stmt = (
        sa.select(job_tables.c.name, jobs.c.status, sa.func.count())
        .select_from(jobs.join(job_tables))
        .where(*selection_filter(sel))
        .group_by(job_tables.c.name, jobs.c.status)
    )
    return {(t, Status(s)): n for t, s, n in conn.execute(stmt)}


def count_by_key(conn: Connection, sel: Selection, key: str) -> list[tuple[Any, Status, int]]:
    """Number of jobs per (value of ``key``, status); jobs without the key count under
    :data:`~dbdict_worker.db.models.MISSING`."""
    s = state.alias("s")
    stmt = (
        sa.select(s.c.vtype, s.c.num, s.c.txt, jobs.c.status, sa.func.count())
        .select_from(jobs.outerjoin(s, sa.and_(s.c.job_id == jobs.c.id, s.c.key == key)))
        .where(*selection_filter(sel))
        .group_by(s.c.vtype, s.c.num, s.c.txt, jobs.c.status)
    )
    out = []
    for vtype, num, txt, status, n in conn.execute(stmt):
        value = MISSING if vtype is None else values.decode(vtype, num, txt)
        out.append((value, Status(status), n))
    return out


def key_types(conn: Connection, sel: Selection) -> dict[str, set[int]]:
    """For each key present in the selected jobs, the set of value types it has."""
    stmt = (
        sa.select(state.c.key, state.c.vtype)
        .select_from(state.join(jobs, jobs.c.id == state.c.job_id))
        .where(*selection_filter(sel))
        .distinct()
    )
    out: dict[str, set[int]] = {}
    for key, vtype in conn.execute(stmt):
        out.setdefault(key, set()).add(vtype)
    return out


def key_names(conn: Connection, sel: Selection) -> list[str] | None:
    """PostgreSQL: the keys of the jobs of ``sel``, sorted, from the state's index alone
    (a skip scan: one index probe per key) when ``sel`` selects every job; None when it
    does not (then :func:`key_types` reads the selected jobs' state, all of it)."""
    if sel.ids is not None or sel.statuses is not None or sel.where:
        return None
    if sel.table_ids is not None:
        # Do the other tables hold any job? Their ids as values, so that the test is an
        # index probe per table (as a subquery, PostgreSQL scanned every job).
        others = list(conn.execute(sa.select(job_tables.c.id)
                                   .where(job_tables.c.id.notin_(sel.table_ids))).scalars())
        if others and conn.execute(
                sa.select(sa.exists().where(jobs.c.table_id.in_(others)))).scalar():
            return None
    # The next key after each one, from the (key, ...) index: as many probes as keys,
    # where SELECT DISTINCT key reads every state row.
    keys = sa.select(sa.func.min(state.c.key).label("key")).cte("keys", recursive=True)
    later = state.alias("later")
    keys = keys.union_all(
        sa.select(sa.select(sa.func.min(later.c.key)).where(later.c.key > keys.c.key)
                  .scalar_subquery())
        .where(keys.c.key.is_not(None)))
    # A key counts only if a job has it (state rows have no foreign key to their job).
    # LATERAL with LIMIT 1: the first row of the key and its job, where an EXISTS would be
    # planned as a semi-join over the whole state.
    st = state.alias("st")
    hit = (sa.select(sa.literal(1).label("one"))
           .select_from(st.join(jobs, jobs.c.id == st.c.job_id))
           .where(st.c.key == keys.c.key).limit(1).lateral("hit"))
    stmt = (sa.select(keys.c.key).select_from(keys.join(hit, sa.true()))
            .where(keys.c.key.is_not(None)))
    return sorted(conn.execute(stmt).scalars())  # Python's order, as sorted(key_types)


def booking_span(conn: Connection,
                 job_ids: Sequence[int]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """When the first of the jobs was booked and when the last one finished (database
    clock); None where none was."""
    first, last = conn.execute(
        sa.select(sa.func.min(jobs.c.booked_at), sa.func.max(jobs.c.finished_at))
        .where(jobs.c.id.in_(list(job_ids)))).one()
    return utc(first), utc(last)


def db_clock(conn: Connection) -> dt.datetime:
    """The database's current time (UTC)."""
    return utc(conn.execute(sa.select(db_now())).scalar_one())  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# History


def select_events(conn: Connection, job_id: int) -> list[Event]:
    """A job's history, oldest first."""
    rows = conn.execute(
        sa.select(events.c.job_id, events.c.at, events.c.kind, events.c.worker_id,
                  events.c.detail)
        .where(events.c.job_id == job_id)
        .order_by(events.c.id)
    )
    return [Event(r[0], utc(r[1]), r[2], r[3], r[4]) for r in rows]


def add_events(conn: Connection, kind: str, job_ids: Iterable[int], *,
               worker_id: str | None = None, detail: str | None = None) -> None:
    """Append one event of ``kind`` for each job."""
    rows = [{"job_id": i, "kind": kind, "worker_id": worker_id, "detail": detail}
            for i in job_ids]
    if rows:
        conn.execute(sa.insert(events), rows)  # "at" is the database clock (server default)


# --------------------------------------------------------------------------------------------
# Changes a user asks for


def _update_selected(conn: Connection, sel: Selection, extra: list, values_: dict) -> list[int]:
    stmt = (
        sa.update(jobs)
        .where(*selection_filter(sel), *extra)
        .values(updated_at=db_now(), **values_)
        .returning(jobs.c.id)
    )
    return sorted(conn.execute(stmt).scalars())


def cancel(conn: Connection, sel: Selection) -> list[int]:
    """Cancel queued and running jobs (a running one's worker stops it when it notices)."""
    ids = _update_selected(
        conn, sel, [jobs.c.status.in_(PENDING)],
        {"status": Status.CANCELED, "finished_at": db_now()},
    )
    add_events(conn, "canceled", ids, detail="by user")
    return ids


def requeue(conn: Connection, sel: Selection, *, priority: float | None = None) -> list[int]:
    """Put finished, failed or cancelled jobs back to START, ready now (their loss, restart
    and retry counts start again: a user's requeue is a fresh budget)."""
    vals: dict[str, Any] = {
        "status": Status.START, "losses": 0, "error": None, "worker_id": None,
        "finished_at": None, "heartbeat_at": None, "restarts": 0, "not_before": None,
        "retried": 0, "prune_requested": False,
    }
    if priority is not None:
        vals["priority"] = priority
    ids = _update_selected(
        conn, sel, [jobs.c.status.notin_(PENDING)], vals
    )
    add_events(conn, "requeued", ids, detail="by user")
    return ids


def set_priority(conn: Connection, sel: Selection, priority: float) -> list[int]:
    """Change the priority of the selected jobs."""
    ids = _update_selected(conn, sel, [], {"priority": priority})
    add_events(conn, "priority", ids, detail=repr(priority))
    return ids


def delete(conn: Connection, sel: Selection) -> list[int]:
    """Delete the selected jobs with their state and history."""
    stmt = sa.delete(jobs).where(*selection_filter(sel)).returning(jobs.c.id)
    ids = sorted(conn.execute(stmt).scalars())
    # state and events have no foreign key to jobs (a per-row check halves a bulk enqueue's
    # speed): their rows go here.
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        conn.execute(sa.delete(state).where(state.c.job_id.in_(chunk)))
        conn.execute(sa.delete(events).where(events.c.job_id.in_(chunk)))
        conn.execute(sa.delete(job_logs).where(job_logs.c.job_id.in_(chunk)))
        conn.execute(sa.delete(metrics).where(metrics.c.job_id.in_(chunk)))
    return ids
