"""The flat SQL view of a table: one row per job, one typed column per state key.

Column names are the flat keys themselves (``lr``, ``model.n_hidden``, ``dbdict.status``),
always quoted by the dialect's identifier preparer; keys longer than PostgreSQL's 63-byte
identifier limit are shortened with a hash suffix. Key names in the SQL text are rendered as
escaped string literals by SQLAlchemy, never pasted in.
"""
from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dbdict_worker.constants import Status
from dbdict_worker.db.models import Selection
from dbdict_worker.db.queries import key_types
from dbdict_worker.db.schema import (
    VTYPE_BOOL,
    VTYPE_FLOAT,
    VTYPE_INT,
    VTYPE_NONE,
    VTYPE_STR,
    job_tables,
    jobs,
    metadata,
    state,
)
from dbdict_worker.db.selection import selection_filter
from dbdict_worker.errors import NotFound, UsageError
from dbdict_worker.db import provenance
from dbdict_worker.records import BOOL, FLOAT, INT, JOB, RESERVED, STATUS, TABLE, TIME

MAX_IDENTIFIER_BYTES = 63


def column_name(key: str) -> str:
    """The view column for a key: the key itself, or a shortened unique form if too long."""
    if len(key.encode()) <= MAX_IDENTIFIER_BYTES:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    head = key.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore")
    return f"{head}~{digest}"


def _quoted(name: str) -> sa.sql.quoted_name:
    """A column name always quoted: a dialect quotes only the words it knows to be
    reserved, and SQLite's list lacks some (a key named ``nothing`` broke the view)."""
    return sa.sql.quoted_name(name, quote=True)


def _status_name() -> sa.ColumnElement:
    return sa.case(*[(jobs.c.status == int(s), s.name) for s in Status], else_=sa.null())


def _reserved_columns(*, as_text: bool = False) -> list[sa.ColumnElement]:
    """The columns of :data:`dbdict_worker.records.RESERVED`, labelled with their keys: typed
    (the view), or ``as_text`` spelled as :func:`dbdict_worker.export.write_csv` writes them."""
    cols = []
    for r in RESERVED:
        if r.kind == TABLE:
            col = job_tables.c.name
        elif r.kind == STATUS:
            col = _status_name()
        else:
            col = jobs.c[r.attr] if r.source == JOB else provenance.reserved_column(r.source,
                                                                                      r.attr)
            if as_text and r.kind == INT:
                col = sa.cast(col, sa.Text)
            elif as_text and r.kind == FLOAT:
                col = _py_float_text(col)
            elif as_text and r.kind == TIME:
                col = _py_time_text(col)
            elif as_text and r.kind == BOOL:  # Python's spelling, as csv.writer writes it
                col = sa.case((col, "True"), (sa.not_(col), "False"))
        cols.append(col.label(_quoted(r.key)))
    return cols


#: Up to this many keys, the view joins ``state`` once per key (:func:`_joined_keys`);
#: beyond, it pivots with one GROUP BY. SQLite refuses a join of more than 64 tables, and
#: a join per key costs a hash table per key on a full read.
MAX_JOINED_KEYS = 60


def _key_value(st: sa.FromClause, vtypes: set[int]) -> sa.ColumnElement:
    """A key's typed value from its ``state`` row ``st`` (an alias joined for that key
    alone), typed by the value types the key has."""
    kinds = vtypes - {VTYPE_NONE}
    if kinds and kinds <= {VTYPE_BOOL}:
        return st.c.num != 0
    if kinds and kinds <= {VTYPE_INT}:
        return sa.cast(st.c.txt, sa.BigInteger)
    if kinds and kinds <= {VTYPE_INT, VTYPE_FLOAT}:
        return st.c.num
    # Strings; mixed types: text (bools are 'True'/'False', lists Python literals).
    return st.c.txt


def _key_column(key: str, vtypes: set[int]) -> sa.ColumnElement:
    """A pivot expression for one key (GROUP BY jobs), typed as :func:`_key_value`."""
    mine = state.c.key == sa.literal(key, sa.Text)
    kinds = vtypes - {VTYPE_NONE}
    if kinds and kinds <= {VTYPE_BOOL}:
        return sa.func.max(sa.case((mine, state.c.num))) != 0
    if kinds and kinds <= {VTYPE_INT}:
        return sa.cast(sa.func.max(sa.case((mine, state.c.txt))), sa.BigInteger)
    if kinds and kinds <= {VTYPE_INT, VTYPE_FLOAT}:
        return sa.func.max(sa.case((mine, state.c.num)))
    if kinds <= {VTYPE_STR}:
        return sa.func.max(sa.case((mine, state.c.txt)))
    # Mixed types: text (bools are 'True'/'False', lists Python literals).
    return sa.func.max(sa.case((mine, state.c.txt)))


def _joined_keys(keys: list[str]) -> tuple[sa.FromClause, list[sa.FromClause]]:
    """The jobs (with their table and submission) LEFT JOINed to one ``state`` alias per
    key, and those aliases in the order of ``keys``.

    Why joins rather than a GROUP BY pivot: a WHERE on a pivoted column can only filter
    after every job's state was aggregated (all rows of ``state`` read), while a WHERE on a
    joined alias's column turns its LEFT JOIN into an inner join that PostgreSQL can start
    from, through ``state_sort`` (key, num, ...), then fetch the job's other keys by
    primary key. Caveat: PostgreSQL reorders at most ``join_collapse_limit`` (8) joined
    tables at once, the first 8 of the FROM list: jobs and the first 7 keys (job_tables
    and submissions come last for that reason). A filter on a later key is applied only
    after those are joined for every job (a full read) unless the session raises the limit
    (``SET join_collapse_limit = 100``)."""
    joined: sa.FromClause = jobs
    aliases = []
    for i, key in enumerate(keys):
        st = state.alias(f"k{i}")  # not the key: any text can be a key
        joined = joined.outerjoin(st, sa.and_(st.c.job_id == jobs.c.id,
                                              st.c.key == sa.literal(key, sa.Text)))
        aliases.append(st)
    joined = joined.join(job_tables, job_tables.c.id == jobs.c.table_id)
    return provenance.with_submissions(joined), aliases


def view_select(conn: Connection, sel: Selection, *,
                joins: bool = True) -> tuple[sa.Select, list[str]]:
    """The view's SELECT for the jobs of ``sel`` and the list of its column names: a join
    per key (:func:`_joined_keys`: what a WHERE on a column can start from), or with
    ``joins=False`` the GROUP BY pivot (same columns, types and rows: one ordered pass
    over the state, for reading every job)."""
    types = key_types(conn, sel)
    cols = _reserved_columns()
    names = [c.name for c in cols]
    seen = set(names)
    keys = []
    for key in sorted(types):
        name = column_name(key)
        if name in seen:  # only possible for shortened names colliding; keep the first
            continue
        seen.add(name)
        names.append(name)
        keys.append(key)
    if joins and len(keys) <= MAX_JOINED_KEYS:
        joined, aliases = _joined_keys(keys)
        cols += [_key_value(st, types[key]).label(_quoted(column_name(key)))
                 for key, st in zip(keys, aliases)]
        return sa.select(*cols).select_from(joined).where(*selection_filter(sel)), names
    cols += [_key_column(key, types[key]).label(_quoted(column_name(key))) for key in keys]
    stmt = (
        sa.select(*cols)
        .select_from(provenance.with_submissions(jobs.join(job_tables))
                     .outerjoin(state, state.c.job_id == jobs.c.id))
        .where(*selection_filter(sel))
        .group_by(jobs.c.id, job_tables.c.id, job_tables.c.name, provenance.GROUP_KEY)
    )
    return stmt, names


def _py_float_text(col: sa.ColumnElement) -> sa.ColumnElement:
    """A float8 spelled like Python's repr: PostgreSQL prints 2.0 as '2'."""
    return sa.case(
        ((col == sa.func.trunc(col)) & (sa.func.abs(col) < 1e16),
         sa.cast(sa.cast(col, sa.BigInteger), sa.Text) + ".0"),
        else_=sa.cast(col, sa.Text))


def _py_time_text(col: sa.ColumnElement) -> sa.ColumnElement:
    """A timestamptz spelled like Python's ``datetime.isoformat()`` in UTC."""
    return sa.func.to_char(sa.func.timezone("UTC", col),
                           'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')


def csv_select(conn: Connection, sel: Selection, keys: list[str]) -> str:
    """SQL (literals inlined, PostgreSQL) whose rows are exactly what
    :func:`dbdict_worker.export.write_csv` writes, for ``COPY ... TO STDOUT``: the server
    pivots the state, so a big export never decodes values in Python."""
    cols = _reserved_columns(as_text=True)
    for key in keys:
        # txt is each value's exact Python spelling already (None has none).
        mine = state.c.key == sa.literal(key, sa.Text)
        cols.append(sa.func.max(sa.case((mine, state.c.txt))).label(_quoted(key)))
    # The GROUP BY pivot rather than the view's join per key (_joined_keys): a read of
    # every job in one ordered pass over the state's primary key, where joins would read
    # the state table once per key (measured 3x slower at 1M jobs x 11 keys).
    inner = (
        sa.select(*cols, jobs.c.id.label("_order"))
        .select_from(provenance.with_submissions(jobs.join(job_tables))
                     .outerjoin(state, state.c.job_id == jobs.c.id))
        .where(*selection_filter(sel))
        .group_by(jobs.c.id, job_tables.c.id, job_tables.c.name, provenance.GROUP_KEY)
        .subquery("pivot")
    )
    # Empty strings as NULL, so that both come out as an empty field, as csv.writer does.
    stmt = sa.select(*[sa.func.nullif(inner.c[c.name], "").label(_quoted(c.name))
                       for c in cols])\
        .order_by(inner.c._order)
    return literal_sql(conn, stmt)


def literal_sql(conn: Connection, stmt: sa.Select) -> str:
    """``stmt`` as text with its literals inlined (escaped by SQLAlchemy), for what takes no
    parameters: COPY, CREATE VIEW, EXPLAIN, a statement run on the plain cursor."""
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.paramstyle in ("format", "pyformat"):
        # psycopg2's dialect doubles every % (in literals and identifiers too) for the
        # driver's parameter interpolation, which a statement run without parameters never
        # undoes: a key or --where value "50%" would be read as "50%%".
        sql = sql.replace("%%", "%")
    return sql


def create_view(conn: Connection, name: str, sel: Selection) -> list[str]:
    """(Re)create the view ``name`` over the jobs of ``sel``; returns its column names."""
    if name in metadata.tables or not name.strip():
        raise UsageError(f"{name!r} cannot be a view name (it is one of dbdict's tables)")
    stmt, names = view_select(conn, sel)
    quoted = conn.dialect.identifier_preparer.quote_identifier(name)
    sql = literal_sql(conn, stmt)
    _exec_raw(conn, f"DROP VIEW IF EXISTS {quoted}")
    _exec_raw(conn, f"CREATE VIEW {quoted} AS {sql}")
    return names


def rows_where(conn: Connection, name: str, column: str, value: Any) -> list[tuple]:
    """The rows of the view ``name`` whose ``column`` equals ``value``: what
    ``SELECT * FROM name WHERE "column" = value`` returns in psql (the value inlined, so
    the server plans with it, as it does for a query typed there)."""
    flat = sa.table(name, sa.column(column))
    stmt = sa.select(sa.literal_column("*")).select_from(flat).where(
        flat.c[column] == sa.literal(value))
    cur = conn.connection.driver_connection.cursor()  # no parameters: see _exec_raw
    try:
        cur.execute(literal_sql(conn, stmt))
        return [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()


def drop_view(conn: Connection, name: str) -> None:
    """Drop the view ``name``; NotFound (naming the views there) if there is none."""
    if name in metadata.tables:
        raise UsageError(f"{name!r} is one of dbdict's tables, not a view")
    found = sa.inspect(conn).get_view_names()
    if name not in found:
        raise NotFound(f"no view {name!r} to drop (views: {', '.join(sorted(found)) or 'none'})")
    _exec_raw(conn, f"DROP VIEW IF EXISTS {conn.dialect.identifier_preparer.quote_identifier(name)}")


def copy_out(conn: Connection, sql: str, out) -> None:  # noqa: ANN001
    """``COPY (sql) TO STDOUT`` as CSV with a header, into the text stream ``out``."""
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)", out)
    finally:
        cur.close()


def _exec_raw(conn: Connection, sql: str) -> None:
    # A DDL string with no parameters: run it on the DBAPI cursor so that no driver-level
    # parameter interpolation touches a '%' that a key name may contain.
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()
