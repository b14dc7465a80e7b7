"""Reading provenance: the ``submissions`` rows behind jobs.

A job's row holds only its ``submission_id``; readers that show provenance (list, show,
exports) attach the :class:`Submission` to each :class:`Job` with :func:`attach`: one small
query per batch of jobs for the submissions not seen yet (a sweep's jobs share one), rather
than an outer join in every read of the jobs table (booking included).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, MutableMapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from dbdict_worker.db.models import Job, Submission, utc
from dbdict_worker.db.schema import jobs, submissions

_COLUMNS = [submissions.c[f.name] for f in dataclasses.fields(Submission)]


def select_submissions(conn: Connection, ids: Iterable[int]) -> dict[int, Submission]:
    """The submissions of ``ids`` that exist, by id."""
    wanted = sorted(set(ids))
    out: dict[int, Submission] = {}
    for start in range(0, len(wanted), 5000):
        rows = conn.execute(sa.select(*_COLUMNS)
                            .where(submissions.c.id.in_(wanted[start:start + 5000])))
        for row in rows:
            r = list(row)
            r[1] = utc(r[1])
            if r[8] is not None:
                r[8] = bool(r[8])  # SQLite gives 0/1
            out[r[0]] = Submission(*r)
    return out


def attach(conn: Connection, found: Sequence[Job],
           cache: MutableMapping[int, Submission | None] | None = None) -> list[Job]:
    """``found`` with their submissions attached (``Job.submission``), for jobs just read
    from the database. ``cache`` keeps the rows already read across calls (an export reads
    its jobs page by page)."""
    cache = {} if cache is None else cache
    missing = {j.submission_id for j in found
               if j.submission_id is not None and j.submission_id not in cache}
    if missing:
        got = select_submissions(conn, missing)
        for i in missing:
            cache[i] = got.get(i)
    for j in found:
        sub = cache[j.submission_id] if j.submission_id is not None else None
        if sub is not None and j.submission is not sub:
            # Set in place rather than dataclasses.replace(): the jobs were just read and are
            # not shared yet, and copying 30 fields per job made a 100k-job export read
            # take ~60% longer.
            object.__setattr__(j, "submission", sub)
    return list(found)


# --------------------------------------------------------------------------------------------
# In the SQL view and the server-side CSV export


class run_fact(FunctionElement):
    """The text of one key of the JSON object in ``jobs.run_info`` (NULL if absent); two
    arguments: the column and the key (a literal)."""

    type = sa.Text()
    inherit_cache = True


@compiles(run_fact)
def _run_fact_postgresql(element, compiler, **kw):  # noqa: ANN001
    column, key = list(element.clauses)
    return f"(CAST({compiler.process(column, **kw)} AS json) ->> {compiler.process(key, **kw)})"


@compiles(run_fact, "sqlite")
def _run_fact_sqlite(element, compiler, **kw):  # noqa: ANN001
    column, key = list(element.clauses)
    return (f"json_extract({compiler.process(column, **kw)}, "
            f"'$.' || {compiler.process(key, **kw)})")


def reserved_column(source: str, attr: str) -> sa.ColumnElement:
    """The SQL expression of a provenance key (``records.ReservedKey`` of ``source``
    SUBMISSION or RUN): a column of the joined ``submissions`` (:func:`with_submissions`),
    or a key of ``jobs.run_info``."""
    if source == "submission":
        return submissions.c[attr]
    return run_fact(jobs.c.run_info, sa.literal(attr, sa.Text))


def with_submissions(joined: sa.FromClause) -> sa.FromClause:
    """``joined`` (holding ``jobs``) with each job's ``submissions`` row, if any."""
    return joined.outerjoin(submissions, submissions.c.id == jobs.c.submission_id)


#: Add to the GROUP BY of a query over :func:`with_submissions`, so that PostgreSQL may read
#: the submissions' columns (functionally dependent on their primary key).
GROUP_KEY = submissions.c.id
