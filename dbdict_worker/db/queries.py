"""Every query dbdict-worker runs, by name.

Each function takes an open connection (inside a transaction the caller owns), never commits,
and returns plain values or frozen dataclasses. Writes that belong to a booked job take a
:class:`Token` and only touch the row while the token still owns it (fencing).
"""
from __future__ import annotations

import datetime as dt
import functools
import io
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.db import values
from dbdict_worker.db.schema import (
    TXT_PREFIX,
    VTYPE_BOOL,
    VTYPE_FLOAT,
    VTYPE_INT,
    VTYPE_LIST,
    VTYPE_NONE,
    VTYPE_STR,
    VTYPE_TUPLE,
    db_ago,
    db_now,
    events,
    job_tables,
    jobs,
    state,
)
from dbdict_worker.state import format_value

# --------------------------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class Job:
    """One row of ``jobs``, with its table's name."""

    id: int
    table: str
    experiment: str
    status: Status
    priority: float
    attempts: int
    losses: int
    max_attempts: int
    replica: int
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    booked_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker_id: str | None
    host: str | None
    workdir: str | None
    error: str | None


@dataclass(frozen=True)
class Token:
    """Proof of ownership of a booked job: the worker and the attempt number it booked."""

    job_id: int
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class Event:
    """One line of a job's history."""

    job_id: int
    at: dt.datetime | None
    kind: str
    worker_id: str | None
    detail: str | None


@dataclass(frozen=True)
class Selection:
    """Which jobs a command acts on. ``None`` fields do not filter."""

    table_ids: tuple[int, ...] | None = None
    ids: tuple[int, ...] | None = None
    statuses: tuple[Status, ...] | None = None
    where: tuple[tuple[str, Any], ...] = ()


_JOB_COLUMNS = (
    jobs.c.id,
    job_tables.c.name,
    jobs.c.experiment,
    jobs.c.status,
    jobs.c.priority,
    jobs.c.attempts,
    jobs.c.losses,
    jobs.c.max_attempts,
    jobs.c.replica,
    jobs.c.created_at,
    jobs.c.updated_at,
    jobs.c.booked_at,
    jobs.c.heartbeat_at,
    jobs.c.finished_at,
    jobs.c.worker_id,
    jobs.c.host,
    jobs.c.workdir,
    jobs.c.error,
)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite gives naive datetimes: they are UTC (the database clock).
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _job(row: Sequence[Any]) -> Job:
    r = list(row)
    r[3] = Status(r[3])
    for i in range(9, 14):
        r[i] = _utc(r[i])
    return Job(*r)


def _is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def _insert(conn: Connection, table: sa.Table):
    return (sqlite.insert if _is_sqlite(conn) else postgresql.insert)(table)


# --------------------------------------------------------------------------------------------
# Tables (named groups of jobs)


def ensure_table(conn: Connection, name: str) -> int:
    """The id of the job table ``name``, creating it if needed (safe under concurrency)."""
    conn.execute(_insert(conn, job_tables).values(name=name).on_conflict_do_nothing())
    return conn.execute(sa.select(job_tables.c.id).where(job_tables.c.name == name)).scalar_one()


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
# Enqueue


# A job's state travels to the database as a "payload" prepared without the job's id (so
# that a big enqueue can prepare the next batch while the database stores the previous one):
# on PostgreSQL a block of COPY lines whose id column is _ID_MARK, on SQLite a list of
# (key, vtype, num, txt) rows.
_ID_MARK = "\x00"  # never in checked text: state.check_value and check_key refuse NUL
_COPY_NULL = "\\N"
_COPY_SPECIAL = re.compile(r"[\\\n\r\t]")
_STATE_COLUMNS = ("job_id", "key", "vtype", "num", "txt")

StatePayload = Union[str, list]


def _copy_escape(text: str) -> str:
    if _COPY_SPECIAL.search(text) is None:
        return text
    return (text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t"))


@functools.lru_cache(maxsize=65536)
def _copy_key(key: str) -> str:
    return f"\t{_copy_escape(key)}\t"


def prepare_state(dialect: str, flat: Mapping[str, Any]) -> StatePayload:
    """A checked flat state as a payload for :func:`insert_state` (``dialect`` is
    ``conn.dialect.name``)."""
    if dialect == "sqlite":
        return [(key, *values.encode(value, nan_as_null=True)) for key, value in flat.items()]
    parts = []
    for key, value in flat.items():
        vtype, num, txt = values.encode(value)
        parts.append(f"{_ID_MARK}{_copy_key(key)}{vtype}\t"
                     f"{_COPY_NULL if num is None else repr(num)}\t"
                     f"{_COPY_NULL if txt is None else _copy_escape(txt)}\n")
    return "".join(parts)


def insert_state(conn: Connection, payloads: Sequence[tuple[int, StatePayload]]) -> None:
    """Store prepared states, as ``(job_id, payload)`` pairs: one COPY on PostgreSQL (an
    order of magnitude faster than INSERT for the millions of rows of a big sweep),
    executemany on SQLite."""
    if _is_sqlite(conn):
        rows = [dict(zip(_STATE_COLUMNS, (job_id, *row)))
                for job_id, payload in payloads for row in payload]
        if rows:
            conn.execute(sa.insert(state), rows)
        return
    text = "".join(block.replace(_ID_MARK, str(job_id)) for job_id, block in payloads)
    if not text:
        return
    # The DBAPI connection under ``conn``: the COPY runs inside the caller's transaction.
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.copy_expert("COPY state (job_id, key, vtype, num, txt) FROM STDIN",
                        io.StringIO(text))
    finally:
        cur.close()


_INSERT_JOBS_PG = sa.text("""
    INSERT INTO jobs (table_id, experiment, priority, max_attempts, params_hash, replica, dedup)
    SELECT :table_id, :experiment, :priority, :max_attempts, u.h, u.r, :dedup
    FROM unnest(CAST(:hashes AS text[]), CAST(:replicas AS integer[])) AS u(h, r)
    ON CONFLICT (table_id, experiment, params_hash, replica) WHERE dedup DO NOTHING
    RETURNING id, params_hash, replica
""")


def _insert_job_rows(conn: Connection, base: dict, keys: list[tuple[str, int]],
                     dedup: bool) -> list[tuple[int, str, int]]:
    """Insert one job row per (hash, replica); returns (id, hash, replica) of the rows made
    (dedup rows that conflict with an existing one are not made)."""
    if not _is_sqlite(conn):
        # One statement per batch: the rows travel as two arrays, not as bound rows.
        params = dict(base, dedup=dedup, hashes=[h for h, _ in keys],
                      replicas=[r for _, r in keys])
        return [tuple(r) for r in conn.execute(_INSERT_JOBS_PG, params)]
    rows = [dict(base, params_hash=h, replica=r, dedup=dedup) for h, r in keys]
    stmt = sa.insert(jobs).returning(jobs.c.id, jobs.c.params_hash, jobs.c.replica)
    if dedup:
        stmt = sqlite.insert(jobs).on_conflict_do_nothing(
            index_elements=[jobs.c.table_id, jobs.c.experiment, jobs.c.params_hash,
                            jobs.c.replica],
            index_where=jobs.c.dedup,
        ).returning(jobs.c.id, jobs.c.params_hash, jobs.c.replica)
    return [tuple(r) for r in conn.execute(stmt, rows)]


def insert_jobs(
    conn: Connection,
    *,
    table_id: int,
    experiment: str,
    items: Sequence[tuple[str, int, StatePayload]],
    priority: float,
    max_attempts: int,
    force: bool,
) -> tuple[list[int], int]:
    """Insert jobs given as ``(params_hash, replica, state payload)`` (see
    :func:`prepare_state`); returns the new ids (in
    the order of ``items``) and how many were skipped as duplicates of existing jobs.

    Without ``force`` a job equal to an existing one (same table, experiment, parameters and
    replica) is skipped; the unique partial index makes this hold even when two enqueuers race.
    With ``force`` such a job is added as an extra copy.
    """
    if not items:
        return [], 0
    base = {"table_id": table_id, "experiment": experiment, "priority": priority,
            "max_attempts": max_attempts}
    # Rows are matched back to items by (hash, replica): equal keys mean equal states, so
    # which of several equal items gets which id does not matter.
    made: dict[tuple[str, int], list[int]] = {}
    for job_id, h, r in _insert_job_rows(conn, base, [(h, r) for h, r, _ in items], True):
        made.setdefault((h, r), []).append(job_id)
    ids: list[int | None] = []
    leftovers: list[int] = []  # items equal to an existing job or to an earlier item
    for i, (h, r, _) in enumerate(items):
        got = made.get((h, r))
        if got:
            ids.append(got.pop())
        else:
            ids.append(None)
            leftovers.append(i)
    skipped = 0
    if leftovers and force:
        copies: dict[tuple[str, int], list[int]] = {}
        keys = [items[i][:2] for i in leftovers]
        for job_id, h, r in _insert_job_rows(conn, base, keys, False):
            copies.setdefault((h, r), []).append(job_id)
        for i in leftovers:
            ids[i] = copies[items[i][:2]].pop()
    else:
        skipped = len(leftovers)
    insert_state(conn, [(job_id, payload) for job_id, (_, _, payload) in zip(ids, items)
                        if job_id is not None])
    return [i for i in ids if i is not None], skipped


# --------------------------------------------------------------------------------------------
# Reading


def _number_texts(value: float | int) -> list[str]:
    """The ``txt`` spellings a number equal to ``value`` can have: the float's repr, and the
    int's digits when the value is integral (so ``lr=1`` finds 1 and 1.0)."""
    as_float = float(value)
    texts = [repr(as_float)]
    if isinstance(value, int):
        texts.append(str(value))
    elif as_float.is_integer():
        texts.append(str(int(as_float)))
    return texts


def _value_filter(st: sa.Table, key: str, value: Any) -> sa.ColumnElement[bool]:
    """Rows of ``st`` (the state table or an alias) whose key is ``key`` and whose value
    equals ``value``: numbers compare as numbers (``lr=1`` matches 1 and 1.0), other types
    exactly. Every test is on ``(key, substr(txt))``, the one value index."""
    prefix = sa.func.substr(st.c.txt, 1, TXT_PREFIX)
    cond = [st.c.key == key]
    if value is None:
        cond.append(st.c.vtype == VTYPE_NONE)
        return sa.and_(*cond)
    if isinstance(value, bool):
        types, texts = [VTYPE_BOOL], ["True" if value else "False"]
    elif isinstance(value, (int, float)):
        types, texts = [VTYPE_INT, VTYPE_FLOAT], _number_texts(value)
    elif isinstance(value, str):
        types, texts = [VTYPE_STR], [value]
    else:
        types = [VTYPE_TUPLE if isinstance(value, tuple) else VTYPE_LIST]
        texts = [format_value(value)]
    cond += [
        prefix.in_([t[:TXT_PREFIX] for t in texts]),
        st.c.txt.in_(texts),
        st.c.vtype.in_(types),
    ]
    return sa.and_(*cond)


def _selection_filter(sel: Selection) -> list[sa.ColumnElement[bool]]:
    cond: list[sa.ColumnElement[bool]] = []
    if sel.table_ids is not None:
        cond.append(jobs.c.table_id.in_(sel.table_ids))
    if sel.ids is not None:
        cond.append(jobs.c.id.in_(sel.ids))
    if sel.statuses is not None:
        cond.append(jobs.c.status.in_([int(s) for s in sel.statuses]))
    for key, value in sel.where:
        # An alias, so that the EXISTS correlates only with jobs even in queries that read
        # the state table themselves.
        st = state.alias("w")
        cond.append(sa.exists().where(st.c.job_id == jobs.c.id, _value_filter(st, key, value)))
    return cond


def select_jobs(conn: Connection, sel: Selection, *, limit: int | None = None) -> list[Job]:
    """Jobs matching ``sel``, by id."""
    stmt = (
        sa.select(*_JOB_COLUMNS)
        .select_from(jobs.join(job_tables))
        .where(*_selection_filter(sel))
        .order_by(jobs.c.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_job(r) for r in conn.execute(stmt)]


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
    batches so a large table is never held in memory at once."""
    last_id = None
    while True:
        stmt = (
            sa.select(*_JOB_COLUMNS)
            .select_from(jobs.join(job_tables))
            .where(*_selection_filter(sel))
            .order_by(jobs.c.id)
            .limit(batch)
        )
        if last_id is not None:
            stmt = stmt.where(jobs.c.id > last_id)
        page = [_job(r) for r in conn.execute(stmt)]
        if not page:
            return
        states = select_state(conn, [j.id for j in page])
        for j in page:
            yield j, states[j.id]
        last_id = page[-1].id


def count_by_status(conn: Connection, sel: Selection) -> dict[tuple[str, Status], int]:
    """Number of jobs per (table, status)."""
    stmt = (
        sa.select(job_tables.c.name, jobs.c.status, sa.func.count())
        .select_from(jobs.join(job_tables))
        .where(*_selection_filter(sel))
        .group_by(job_tables.c.name, jobs.c.status)
    )
    return {(t, Status(s)): n for t, s, n in conn.execute(stmt)}


MISSING = object()


def count_by_key(conn: Connection, sel: Selection, key: str) -> list[tuple[Any, Status, int]]:
    """Number of jobs per (value of ``key``, status); jobs without the key count under
    :data:`MISSING`."""
    s = state.alias("s")
    stmt = (
        sa.select(s.c.vtype, s.c.num, s.c.txt, jobs.c.status, sa.func.count())
        .select_from(jobs.outerjoin(s, sa.and_(s.c.job_id == jobs.c.id, s.c.key == key)))
        .where(*_selection_filter(sel))
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
        .where(*_selection_filter(sel))
        .distinct()
    )
    out: dict[str, set[int]] = {}
    for key, vtype in conn.execute(stmt):
        out.setdefault(key, set()).add(vtype)
    return out


def select_events(conn: Connection, job_id: int) -> list[Event]:
    """A job's history, oldest first."""
    rows = conn.execute(
        sa.select(events.c.job_id, events.c.at, events.c.kind, events.c.worker_id,
                  events.c.detail)
        .where(events.c.job_id == job_id)
        .order_by(events.c.id)
    )
    return [Event(r[0], _utc(r[1]), r[2], r[3], r[4]) for r in rows]


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
        .where(*_selection_filter(sel), *extra)
        .values(updated_at=db_now(), **values_)
        .returning(jobs.c.id)
    )
    return sorted(conn.execute(stmt).scalars())


def cancel(conn: Connection, sel: Selection) -> list[int]:
    """Cancel queued and running jobs (a running one's worker stops it when it notices)."""
    ids = _update_selected(
        conn, sel, [jobs.c.status.in_([Status.START, Status.RUNNING])],
        {"status": Status.CANCELED, "finished_at": db_now()},
    )
    add_events(conn, "canceled", ids, detail="by user")
    return ids


def requeue(conn: Connection, sel: Selection, *, priority: float | None = None) -> list[int]:
    """Put finished, failed or cancelled jobs back to START (their loss count restarts)."""
    vals: dict[str, Any] = {
        "status": Status.START, "losses": 0, "error": None, "worker_id": None,
        "finished_at": None, "heartbeat_at": None,
    }
    if priority is not None:
        vals["priority"] = priority
    ids = _update_selected(
        conn, sel, [jobs.c.status.notin_([Status.START, Status.RUNNING])], vals
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
    stmt = sa.delete(jobs).where(*_selection_filter(sel)).returning(jobs.c.id)
    ids = sorted(conn.execute(stmt).scalars())
    # No foreign keys on state and events (see schema.py): their rows go here.
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        conn.execute(sa.delete(state).where(state.c.job_id.in_(chunk)))
        conn.execute(sa.delete(events).where(events.c.job_id.in_(chunk)))
    return ids


# --------------------------------------------------------------------------------------------
# The queue core: booking and fenced writes


def _book_changes(worker_id: Any, host: Any) -> dict[str, Any]:
    return dict(status=Status.RUNNING, attempts=jobs.c.attempts + 1, worker_id=worker_id,
                host=host, booked_at=db_now(), heartbeat_at=db_now(), updated_at=db_now(),
                finished_at=None, error=None)


def _pick(with_tables: bool) -> sa.Select:
    ready = [jobs.c.status == Status.START]
    if with_tables:
        ready.append(jobs.c.table_id.in_(sa.bindparam("table_ids", expanding=True)))
    return (sa.select(jobs.c.id).where(*ready)
            .order_by(jobs.c.priority.desc(), jobs.c.id).limit(sa.bindparam("n")))


@functools.lru_cache(maxsize=None)
def _book_statement_pg(with_tables: bool) -> sa.Select:
    """The booking statement, built once (with bind parameters): pick the ready rows
    (skipping locked ones), update them, log the events and return the rows with their
    table's name, in one round trip."""
    picked = _pick(with_tables).with_for_update(skip_locked=True).cte("picked")
    updated = (sa.update(jobs).where(jobs.c.id == picked.c.id)
               .values(**_book_changes(sa.bindparam("new_worker"), sa.bindparam("new_host")))
               .returning(*jobs.c).cte("booked"))
    logged = sa.insert(events).from_select(
        ["job_id", "kind", "worker_id", "detail"],
        sa.select(updated.c.id, sa.literal("booked"), sa.bindparam("new_worker"),
                  sa.bindparam("new_host"))).cte("logged")
    columns = [updated.c[c.name] if c.table is jobs else c for c in _JOB_COLUMNS]
    # The state comes along as JSON: [[key, vtype, txt], ...] (txt alone spells every value).
    st = state.alias("s")
    state_json = (sa.select(sa.func.json_agg(sa.func.json_build_array(st.c.key, st.c.vtype,
                                                                      st.c.txt)))
                  .where(st.c.job_id == updated.c.id).scalar_subquery())
    return (sa.select(*columns, state_json)
            .select_from(updated.join(job_tables, job_tables.c.id == updated.c.table_id))
            .add_cte(logged))


def book(conn: Connection, *, worker_id: str, host: str, table_ids: Sequence[int] | None,
         n: int) -> list[tuple[Job, dict[str, Any]]]:
    """Book up to ``n`` ready jobs for ``worker_id``, highest priority first, then lowest
    id; rows another booker holds are skipped, never waited for. Returns each job with its
    flat state (one round trip on PostgreSQL)."""
    params: dict[str, Any] = {"n": n, "new_worker": worker_id, "new_host": host}
    if table_ids is not None:
        params["table_ids"] = list(table_ids)
    if _is_sqlite(conn):
        # BEGIN IMMEDIATE already serializes writers; one UPDATE ... RETURNING books.
        stmt = (sa.update(jobs)
                .where(jobs.c.id.in_(_pick(table_ids is not None).scalar_subquery()))
                .values(**_book_changes(worker_id, host)).returning(jobs.c.id))
        ids = list(conn.execute(stmt, params).scalars())
        if not ids:
            return []
        add_events(conn, "booked", ids, worker_id=worker_id, detail=host)
        found = select_jobs(conn, Selection(ids=tuple(ids)))
        states = select_state(conn, ids)
        booked = [(j, states[j.id]) for j in found]
    else:
        booked = []
        for row in conn.execute(_book_statement_pg(table_ids is not None), params):
            flat = {key: values.decode(vtype, None, txt) for key, vtype, txt in row[-1] or ()}
            booked.append((_job(row[:-1]), dict(sorted(flat.items()))))
    return sorted(booked, key=lambda b: (-b[0].priority, b[0].id))


def _owned(token: Token) -> list[sa.ColumnElement[bool]]:
    return [
        jobs.c.id == token.job_id,
        jobs.c.worker_id == token.worker_id,
        jobs.c.attempts == token.attempt,
        jobs.c.status == Status.RUNNING,
    ]


def touch_owned(conn: Connection, token: Token, **changes: Any) -> bool:
    """Update the job's row if ``token`` still owns it; the row lock taken here also orders
    this write after any concurrent requeue. Returns False when ownership was lost."""
    stmt = (
        sa.update(jobs)
        .where(*_owned(token))
        .values(updated_at=db_now(), heartbeat_at=db_now(), **changes)
    )
    return conn.execute(stmt).rowcount == 1


def replace_state(conn: Connection, job_id: int, flat: Mapping[str, Any]) -> None:
    """Replace a job's whole state (the caller has checked ownership in this transaction)."""
    conn.execute(sa.delete(state).where(state.c.job_id == job_id))
    insert_state(conn, [(job_id, prepare_state(conn.dialect.name, flat))])


def release_owned(conn: Connection, token: Token, status: Status, *, priority: float | None,
                  error: str | None, workdir: str | None, event: tuple[str, str]) -> bool:
    """End the owner's booking: a final status, or START again (requeue), and log ``event``
    (kind, detail). Conditional on ownership; returns False when it was lost."""
    changes: dict[str, Any] = {"status": status, "error": error}
    if workdir is not None:
        changes["workdir"] = workdir
    if status == Status.START:
        changes["priority"] = RESTART_PRIORITY if priority is None else priority
        changes["worker_id"] = None
    else:
        changes["finished_at"] = db_now()
    kind, detail = event
    if _is_sqlite(conn):
        if not touch_owned(conn, token, **changes):
            return False
        add_events(conn, kind, [token.job_id], worker_id=token.worker_id, detail=detail)
        return True
    params = {f"new_{k}": v for k, v in changes.items() if k != "finished_at"}
    params.update(own_id=token.job_id, own_worker=token.worker_id, own_attempt=token.attempt,
                  kind=kind, detail=detail)
    stmt = _release_statement_pg(tuple(sorted(changes)))
    return conn.execute(stmt, params).first() is not None


@functools.lru_cache(maxsize=None)
def _release_statement_pg(columns: tuple[str, ...]) -> sa.Insert:
    """The release statement for a set of changed columns, built once with bind parameters:
    the conditional update and its event, in one round trip."""
    # Bind names differ from column names: in an UPDATE, a bind parameter named like a
    # column is taken as that column's new value.
    values: dict[str, Any] = {c: sa.bindparam(f"new_{c}") for c in columns
                              if c != "finished_at"}
    if "finished_at" in columns:
        values["finished_at"] = db_now()
    owned = [jobs.c.id == sa.bindparam("own_id"), jobs.c.worker_id == sa.bindparam("own_worker"),
             jobs.c.attempts == sa.bindparam("own_attempt"), jobs.c.status == Status.RUNNING]
    updated = (sa.update(jobs).where(*owned)
               .values(updated_at=db_now(), heartbeat_at=db_now(), **values)
               .returning(jobs.c.id).cte("released"))
    return sa.insert(events).from_select(
        ["job_id", "kind", "worker_id", "detail"],
        sa.select(updated.c.id, sa.bindparam("kind"), sa.bindparam("own_worker"),
                  sa.bindparam("detail"))).returning(events.c.job_id)


def heartbeat(conn: Connection, worker_id: str, tokens: Sequence[Token]) -> set[int]:
    """Refresh the heartbeat of the jobs ``worker_id`` still owns among ``tokens``; returns
    the ids still owned (the others were lost: cancelled, requeued or deleted)."""
    if not tokens:
        return set()
    pairs = [(t.job_id, t.attempt) for t in tokens]
    stmt = (
        sa.update(jobs)
        .where(
            sa.tuple_(jobs.c.id, jobs.c.attempts).in_(pairs),
            jobs.c.worker_id == worker_id,
            jobs.c.status == Status.RUNNING,
        )
        .values(heartbeat_at=db_now())
        .returning(jobs.c.id)
    )
    return set(conn.execute(stmt).scalars())


@dataclass(frozen=True)
class Rescued:
    """A job whose owner stopped heartbeating, and what became of it."""

    job_id: int
    worker_id: str | None
    status: Status


def requeue_stale(conn: Connection, *, lease_seconds: float,
                  by_worker: str | None = None) -> list[Rescued]:
    """Requeue RUNNING jobs whose heartbeat is older than the lease, at RESTART_PRIORITY,
    counting a loss; a job lost ``max_attempts`` times becomes ERR_RUN instead."""
    stale = (
        sa.select(jobs.c.id, jobs.c.worker_id, jobs.c.host, jobs.c.losses, jobs.c.max_attempts)
        .where(jobs.c.status == Status.RUNNING, jobs.c.heartbeat_at < db_ago(lease_seconds))
        .order_by(jobs.c.id)
    )
    if not _is_sqlite(conn):
        stale = stale.with_for_update(skip_locked=True)
    out = []
    for job_id, worker_id, host, losses, max_attempts in conn.execute(stale).all():
        lost = losses + 1
        why = f"lost: owner {worker_id} on {host} stopped heartbeating (loss {lost}/{max_attempts})"
        if lost >= max_attempts:
            new = Status.ERR_RUN
            changes: dict[str, Any] = {"error": why, "finished_at": db_now()}
        else:
            new = Status.START
            changes = {"priority": RESTART_PRIORITY, "worker_id": None}
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == Status.RUNNING)
            .values(status=new, losses=lost, updated_at=db_now(), **changes)
        )
        add_events(conn, "lost", [job_id], worker_id=by_worker, detail=f"{why}; now {new.name}")
        out.append(Rescued(job_id, worker_id, new))
    return out


def db_clock(conn: Connection) -> dt.datetime:
    """The database's current time (UTC)."""
    return _utc(conn.execute(sa.select(db_now())).scalar_one())  # type: ignore[return-value]


__all__ = [
    "Job", "Token", "Event", "Selection", "Rescued", "MISSING",
    "ensure_table", "table_ids", "table_names", "insert_jobs", "select_jobs", "select_state",
    "iter_jobs_with_state", "count_by_status", "count_by_key", "key_types", "select_events",
    "add_events", "cancel", "requeue", "set_priority", "delete", "book", "touch_owned",
    "replace_state", "release_owned", "heartbeat", "requeue_stale", "db_clock",
    "VTYPE_BOOL", "VTYPE_FLOAT", "VTYPE_INT", "VTYPE_LIST", "VTYPE_NONE", "VTYPE_STR",
    "VTYPE_TUPLE",
]
