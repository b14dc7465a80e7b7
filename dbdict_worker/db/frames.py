"""The flat view's rows for a DataFrame (:mod:`dbdict_worker.frames`): the view's own SELECT
(:func:`.views.view_select`, ordered by job id) with the kind of each column, read in one
statement straight from the DBAPI cursor, so no per-row SQLAlchemy objects are built.

On PostgreSQL the rows come as ``COPY ... TO STDOUT`` CSV (text parsed by pandas' C reader,
several times faster than psycopg2 building a Python object per cell); on SQLite as the
cursor's tuples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dbdict_worker.db import views
from dbdict_worker.db.models import Selection
from dbdict_worker.db.schema import jobs
from dbdict_worker.records import RESERVED

# A column's kind: how its values are typed in the frame.
INT = "int"
FLOAT = "float"
BOOL = "bool"
TEXT = "text"
TIME = "time"

#: The job id's column, first in the view.
ID = RESERVED[0].key

#: Put before every non-NULL text value by :func:`copy_csv`, for the reader to strip: a CSV
#: reader cannot tell an empty or NULL-looking string from NULL (an empty field) by its
#: quotes, but a marked string is never empty.
TEXT_MARK = "."


@dataclass(frozen=True)
class FrameColumn:
    """One column of the view: its name, kind (INT, FLOAT, BOOL, TEXT, TIME) and whether it
    can be NULL (every state key can: a job may not have it)."""

    name: str
    kind: str
    nullable: bool


def _kind(t: sa.types.TypeEngine) -> str:
    # The view types each column already (views._key_column, the reserved columns); this
    # reads the kind back from its SQLAlchemy type instead of restating the rule.
    if isinstance(t, sa.Boolean):
        return BOOL
    if isinstance(t, sa.Integer):
        return INT
    if isinstance(t, sa.Float):
        return FLOAT
    if isinstance(t, sa.DateTime):
        return TIME
    return TEXT


def _nullable(col: sa.ColumnElement) -> bool:
    inner = getattr(col, "element", col)  # the labelled expression
    return not (isinstance(inner, sa.Column) and inner.nullable is False)


def frame_select(conn: Connection, sel: Selection) -> tuple[sa.Select, list[FrameColumn]]:
    """The view's SELECT over the jobs of ``sel``, by job id, and its columns."""
    # The pivot form: a frame reads every selected job, which one pass over the state
    # does faster than a join per key; a --where is applied to the jobs before pivoting.
    stmt, names = views.view_select(conn, sel, joins=False)
    stmt = stmt.order_by(jobs.c.id)
    cols = [FrameColumn(name, _kind(c.type), _nullable(c))
            for name, c in zip(names, stmt.selected_columns)]
    return stmt, cols


def fetch_rows(conn: Connection, stmt: sa.Select) -> list[tuple]:
    """All rows of ``stmt`` as the DBAPI cursor gives them (no SQLAlchemy row processing:
    SQLite gives times as text, booleans as 0/1)."""
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(views.literal_sql(conn, stmt))
        return cur.fetchall()
    finally:
        cur.close()


def copy_csv(conn: Connection, stmt: sa.Select, cols: list[FrameColumn], out: IO) -> None:
    """PostgreSQL: ``stmt``'s rows as CSV (no header) into the binary or text stream
    ``out``: NULL as an empty field, every non-NULL text value behind :data:`TEXT_MARK`,
    times in UTC ISO 8601, floats with their shortest exact spelling."""
    sub = stmt.order_by(None).subquery("view")
    marked = sa.select(*[
        (sa.literal(TEXT_MARK, sa.Text) + sub.c[c.name]).label(c.name) if c.kind == TEXT
        else sub.c[c.name] for c in cols]).order_by(sub.c[ID])
    cur = conn.connection.driver_connection.cursor()
    try:
        # For this transaction only: times printed in UTC, floats exact (the default from
        # PostgreSQL 12 on; older servers round to 15 digits without it).
        cur.execute("SET LOCAL TIME ZONE 'UTC'; SET LOCAL extra_float_digits = 3")
        cur.copy_expert(f"COPY ({views.literal_sql(conn, marked)}) TO STDOUT WITH (FORMAT csv)", out)
    finally:
        cur.close()
