"""Upserting rows that belong to jobs (output tails, reported metrics) in one statement, as
a worker's batched writes do: the last row of each key wins, and the rows of jobs that no
longer exist (deleted while they ran) are left out, since those tables have no foreign key.
"""
from __future__ import annotations

from typing import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dbdict_worker.db.schema import jobs

#: Rows per statement on SQLite (its bound on parameters).
CHUNK = 500

#: Makes a dialect's INSERT an upsert (``stmt.on_conflict_do_update(...)``).
OnConflict = Callable[[sa.Insert], sa.Insert]


class JobRowUpsert:
    """The upsert of ``table``'s rows: ``names`` and ``types`` its columns (``job_id`` first),
    ``key`` how many of them (from the first) identify a row, ``on_conflict`` what a repeated
    row does. On PostgreSQL one statement, compiled once, takes every row as one array per
    column; SQLite has no arrays: the jobs are looked up first, then multi-row INSERTs."""

    def __init__(self, table: sa.Table, names: Sequence[str], types: Sequence[type],
                 key: int, on_conflict: OnConflict) -> None:
        self.table, self.names, self.key, self.on_conflict = table, list(names), key, on_conflict
        rows = sa.func.unnest(*(sa.bindparam(n, type_=postgresql.ARRAY(t)) for n, t in
                                zip(names, types))).table_valued(*names).render_derived("v")
        self._pg = on_conflict(postgresql.insert(table).from_select(
            self.names, sa.select(*rows.c).where(sa.exists().where(jobs.c.id == rows.c.job_id))))

    def __call__(self, conn: Connection, values: Sequence[tuple]) -> int:
        """Write these rows (tuples in the order of ``names``); returns how many were."""
        latest = {v[:self.key]: v for v in values}  # a statement may not update a row twice
        values = list(latest.values())
        if not values:
            return 0
        if conn.dialect.name == "postgresql":
            # A convenience beside the results: its commit need not wait for the WAL flush
            # (a database crash may lose the last second of them, never a status).
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            columns = dict(zip(self.names, map(list, zip(*values))))
            return conn.execute(self._pg, columns).rowcount
        ids = sorted({v[0] for v in values})
        existing: set[int] = set()
        for start in range(0, len(ids), CHUNK):
            existing.update(conn.execute(
                sa.select(jobs.c.id).where(jobs.c.id.in_(ids[start:start + CHUNK]))).scalars())
        kept = [dict(zip(self.names, v)) for v in values if v[0] in existing]
        written = 0
        for start in range(0, len(kept), CHUNK):
            written += conn.execute(self.on_conflict(
                sqlite.insert(self.table).values(kept[start:start + CHUNK]))).rowcount
        return written
