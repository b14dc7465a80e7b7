"""The queries behind the dashboard, ``dbdict report`` and ``status --watch``: finished jobs
per minute, the latest failures, a sorted page of jobs, the workers' GPUs.

Every one is read-only and bounded: a page of ids, the last hour's finished jobs counted per
minute by the server, never a whole table in Python. Each takes an open connection and a
:class:`~dbdict_worker.db.models.Selection`, like :mod:`.queries`.
"""
from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from dbdict_worker.constants import FAILED, Status
from dbdict_worker.db import views
from dbdict_worker.db.models import JOB_COLUMNS, Job, Selection, job_from_row
from dbdict_worker.db.schema import TXT_PREFIX, db_ago, job_tables, jobs, state
from dbdict_worker.db.selection import selection_filter


#: Job columns a page can be sorted by (anything else is a state key).
SORT_COLUMNS = {
    "id": jobs.c.id,
    "table": job_tables.c.name,
    "experiment": jobs.c.experiment,
    "status": jobs.c.status,
    "priority": jobs.c.priority,
    "attempts": jobs.c.attempts,
    "host": jobs.c.host,
    "created_at": jobs.c.created_at,
    "updated_at": jobs.c.updated_at,
    "booked_at": jobs.c.booked_at,
    "finished_at": jobs.c.finished_at,
}


class minutes_ago(FunctionElement):
    """Whole minutes between a time column and the database clock (0: the last minute)."""

    type = sa.Integer()
    inherit_cache = True


@compiles(minutes_ago)
def _minutes_ago_pg(element, compiler, **kw):  # noqa: ANN001
    col = compiler.process(element.clauses, **kw)
    return f"floor(extract(epoch from (now() - {col})) / 60)::int"


@compiles(minutes_ago, "sqlite")
def _minutes_ago_sqlite(element, compiler, **kw):  # noqa: ANN001
    col = compiler.process(element.clauses, **kw)
    return f"cast((julianday('now') - julianday({col})) * 1440 as integer)"


def finished_per_minute(conn: Connection, sel: Selection,
                        minutes: int = 60) -> list[tuple[str, Status, int, int]]:
    """``(table, status, minutes ago, count)`` of the jobs that ended in the last
    ``minutes`` minutes, counted per minute by the server."""
    ago = minutes_ago(jobs.c.finished_at)
    cond = [jobs.c.finished_at > db_ago(minutes * 60), ago < minutes, ago >= 0]
    stmt = (
        sa.select(job_tables.c.name, jobs.c.status, ago.label("ago"), sa.func.count())
        .select_from(jobs.join(job_tables))
        .where(*selection_filter(sel), *cond)
        .group_by(job_tables.c.name, jobs.c.status, sa.literal_column("ago"))
    )
    return [(t, Status(s), int(a), n) for t, s, a, n in conn.execute(stmt)]


def latest_failures(conn: Connection, sel: Selection, table_id: int,
                    limit: int = 5) -> list[Job]:
    """The last ``limit`` jobs of a table that ended failed, newest first."""
    stmt = (
        sa.select(*JOB_COLUMNS)
        .select_from(jobs.join(job_tables))
        .where(*selection_filter(sel), jobs.c.table_id == table_id,
               jobs.c.status.in_([int(s) for s in FAILED]))
        .order_by(jobs.c.finished_at.desc().nulls_last(), jobs.c.id.desc())
        .limit(limit)
    )
    return _rows(conn, stmt)


def table_ids_by_name(conn: Connection, sel: Selection) -> dict[str, int]:
    """The tables ``sel`` covers, name to id."""
    stmt = sa.select(job_tables.c.name, job_tables.c.id)
    if sel.table_ids is not None:
        stmt = stmt.where(job_tables.c.id.in_(sel.table_ids))
    return dict(conn.execute(stmt.order_by(job_tables.c.name)).all())


def worker_run_info(conn: Connection, worker_ids: Sequence[str]) -> dict[str, str]:
    """The ``run_info`` of one running job of each worker (it records the worker's GPUs)."""
    if not worker_ids:
        return {}
    rows = conn.execute(
        sa.select(jobs.c.worker_id, sa.func.max(jobs.c.run_info))
        .where(jobs.c.status == Status.RUNNING, jobs.c.worker_id.in_(list(worker_ids)),
               jobs.c.run_info.is_not(None))
        .group_by(jobs.c.worker_id))
    return dict(rows.all())


def _present_order(s: sa.Table, desc: bool) -> list[sa.ColumnElement]:
    """ORDER BY terms for the jobs that have the sort key: numbers (bools, ints, floats) by
    value, then other values by text, ties by id; ``desc`` the exact reverse. Exactly the
    order of the ``state_sort`` index, so that PostgreSQL walks it and stops after a page."""
    cols = [s.c.num, sa.func.substr(s.c.txt, 1, TXT_PREFIX), s.c.job_id]
    if desc:
        return [c.desc().nulls_first() for c in cols]
    return [c.asc().nulls_last() for c in cols]


def page(conn: Connection, sel: Selection, *, sort: str = "id", desc: bool = False,
         offset: int = 0, limit: int = 100) -> list[Job]:
    """One page of the jobs of ``sel``, sorted by a job column (:data:`SORT_COLUMNS`) or a
    state key; jobs without the key come last, by id, either way."""
    base = sa.select(*JOB_COLUMNS).where(*selection_filter(sel))
    by_id = jobs.c.id.desc() if desc else jobs.c.id.asc()
    if sort in SORT_COLUMNS:
        col = SORT_COLUMNS[sort]
        terms = [by_id] if sort == "id" else [
            (col.desc() if desc else col.asc()).nulls_last(), by_id]
        stmt = base.select_from(jobs.join(job_tables)).order_by(*terms)
        return _rows(conn, stmt.offset(offset).limit(limit))
    # Those with the key, driven by the sorted index, then those without it. An outer join
    # in one query would sort every job: the planner cannot walk an index on the nullable
    # side of a join.
    s = state.alias("sortkey")
    has_key = (base.select_from(s.join(jobs, jobs.c.id == s.c.job_id).join(job_tables))
               .where(s.c.key == sa.literal(sort, sa.Text)).order_by(*_present_order(s, desc)))
    found = _rows(conn, has_key.offset(offset).limit(limit))
    if len(found) == limit:
        return found
    if found:
        with_key = offset + len(found)
    else:
        with_key = int(conn.execute(sa.select(sa.func.count()).select_from(
            has_key.order_by(None).subquery())).scalar_one())
    lacking = (base.select_from(jobs.join(job_tables))
               .where(~sa.exists().where(s.c.job_id == jobs.c.id,
                                         s.c.key == sa.literal(sort, sa.Text)))
               .order_by(jobs.c.id))
    return found + _rows(conn, lacking.offset(max(0, offset - with_key))
                         .limit(limit - len(found)))


def _rows(conn: Connection, stmt: sa.Select) -> list[Job]:
    return [job_from_row(r) for r in conn.execute(stmt)]


def count(conn: Connection, sel: Selection, *, exact_up_to: int | None = None) -> tuple[int, bool]:
    """How many jobs ``sel`` picks, and whether that is exact. Counting is cheap on the jobs
    table alone (tables, statuses, ids: its indexes); with ``--where`` filters it reads the
    state of every match, so with ``exact_up_to`` a larger count on PostgreSQL is the
    planner's estimate instead (100,000 matches: 500 ms to count, 1 ms to estimate)."""
    stmt = sa.select(jobs.c.id).where(*selection_filter(sel))
    if not sel.where or exact_up_to is None or conn.dialect.name != "postgresql":
        return _count(conn, stmt), True
    capped = _count(conn, stmt.limit(exact_up_to + 1))
    if capped <= exact_up_to:
        return capped, True
    return max(capped, _estimate(conn, stmt)), False


def _count(conn: Connection, stmt: sa.Select) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
               .scalar_one())


def _estimate(conn: Connection, stmt: sa.Select) -> int:
    """The planner's guess of the rows ``stmt`` returns (PostgreSQL)."""
    sql = views.literal_sql(conn, stmt)
    cur = conn.connection.driver_connection.cursor()
    try:  # no parameters: the driver leaves a '%' in a literal alone
        cur.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        plan = cur.fetchone()[0]
    finally:
        cur.close()
    return int(plan[0]["Plan"]["Plan Rows"])


def first_ids(conn: Connection, sel: Selection, limit: int) -> list[int]:
    """The ids of the first ``limit`` jobs of ``sel`` (oldest first)."""
    stmt = (sa.select(jobs.c.id).where(*selection_filter(sel)).order_by(jobs.c.id)
            .limit(limit))
    return list(conn.execute(stmt).scalars())


def sample_keys(conn: Connection, job_ids: Sequence[int]) -> dict[str, set[int]]:
    """The keys, and their value types, of the given jobs' state."""
    out: dict[str, set[int]] = {}
    for start in range(0, len(job_ids), 5000):
        rows = conn.execute(
            sa.select(state.c.key, state.c.vtype)
            .where(state.c.job_id.in_(list(job_ids[start:start + 5000])))
            .distinct())
        for key, vtype in rows:
            out.setdefault(key, set()).add(vtype)
    return out
