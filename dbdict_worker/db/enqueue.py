"""Enqueue: the job rows and their typed state, in as few statements as a big sweep allows
(one INSERT per batch of jobs, their state rows by COPY on PostgreSQL). Like :mod:`.queue`,
each function takes a connection inside the caller's transaction and never commits."""
from __future__ import annotations

import functools
import io
import re
from typing import Any, Mapping, Sequence, Union

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dbdict_worker.constants import DEFAULT_MAX_RESTARTS
from dbdict_worker.db import values
from dbdict_worker.db.schema import job_tables, jobs, state, submissions

SQLITE = "sqlite"


def ensure_table(conn: Connection, name: str) -> int:
    """The id of the job table ``name``, creating it if needed (safe under concurrency)."""
    insert = sqlite.insert if conn.dialect.name == SQLITE else postgresql.insert
    conn.execute(insert(job_tables).values(name=name).on_conflict_do_nothing())
    return conn.execute(sa.select(job_tables.c.id).where(job_tables.c.name == name)).scalar_one()


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
    if dialect == SQLITE:
        # SQLite's REAL columns cannot hold NaN: num is NULL there (txt keeps the value).
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
    if conn.dialect.name == SQLITE:
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
        cur.copy_expert(f"COPY state ({', '.join(_STATE_COLUMNS)}) FROM STDIN",
                        io.StringIO(text))
    finally:
        cur.close()


# PostgreSQL: one statement per batch, the rows travel as two arrays, not as bound rows.
_INSERT_JOBS_POSTGRESQL = sa.text("""
    INSERT INTO jobs (table_id, experiment, priority, max_attempts, max_restarts, retries,
                      retry_on, retry_delay, timeout, stall_after, submission_id, params_hash,
                      replica, dedup)
    SELECT :table_id, :experiment, :priority, :max_attempts, :max_restarts, :retries,
           :retry_on, :retry_delay, :timeout, :stall_after, :submission_id, u.h, u.r, :dedup
    FROM unnest(CAST(:hashes AS text[]), CAST(:replicas AS integer[])) AS u(h, r)
    ON CONFLICT (table_id, experiment, params_hash, replica) WHERE dedup DO NOTHING
    RETURNING id, params_hash, replica
""")
# SQLite: executemany of one bound row per job.
_INSERT_JOBS_SQLITE = {
    True: sqlite.insert(jobs).on_conflict_do_nothing(
        index_elements=[jobs.c.table_id, jobs.c.experiment, jobs.c.params_hash, jobs.c.replica],
        index_where=jobs.c.dedup,
    ).returning(jobs.c.id, jobs.c.params_hash, jobs.c.replica),
    False: sa.insert(jobs).returning(jobs.c.id, jobs.c.params_hash, jobs.c.replica),
}


def _insert_job_rows(conn: Connection, base: dict, keys: list[tuple[str, int]],
                     dedup: bool) -> list[tuple[int, str, int]]:
    """Insert one job row per (hash, replica); returns (id, hash, replica) of the rows made
    (dedup rows that conflict with an existing one are not made)."""
    if conn.dialect.name == SQLITE:
        rows = [dict(base, params_hash=h, replica=r, dedup=dedup) for h, r in keys]
        return [tuple(r) for r in conn.execute(_INSERT_JOBS_SQLITE[dedup], rows)]
    params = dict(base, dedup=dedup, hashes=[h for h, _ in keys], replicas=[r for _, r in keys])
    return [tuple(r) for r in conn.execute(_INSERT_JOBS_POSTGRESQL, params)]


#: The job columns an enqueue may set beyond the fixed ones, with their values when not set.
POLICY_COLUMNS: Mapping[str, Any] = {"retries": 0, "retry_on": None, "retry_delay": None,
                                     "timeout": None, "stall_after": None,
                                     "submission_id": None}


def insert_submission(conn: Connection, facts: Mapping[str, Any]) -> int:
    """Record one enqueue's provenance (columns of ``submissions``); its id."""
    return conn.execute(sa.insert(submissions).values(**facts)
                        .returning(submissions.c.id)).scalar_one()


def insert_jobs(
    conn: Connection,
    *,
    table_id: int,
    experiment: str,
    items: Sequence[tuple[str, int, StatePayload]],
    priority: float,
    max_attempts: int,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    policy: Mapping[str, Any] | None = None,
    force: bool,
) -> tuple[list[int], int]:
    """Insert jobs given as ``(params_hash, replica, state payload)`` (see
    :func:`prepare_state`); returns the new ids (in
    the order of ``items``) and how many were skipped as duplicates of existing jobs.
    ``policy`` sets the columns of :data:`POLICY_COLUMNS` (the others stay NULL or 0).

    Without ``force`` a job equal to an existing one (same table, experiment, parameters and
    replica) is skipped; the unique partial index makes this hold even when two enqueuers race.
    With ``force`` such a job is added as an extra copy.
    """
    if not items:
        return [], 0
    unknown = set(policy or ()) - set(POLICY_COLUMNS)
    if unknown:
        raise ValueError(f"not a job policy column: {', '.join(sorted(unknown))}")
    base = {"table_id": table_id, "experiment": experiment, "priority": priority,
            "max_attempts": max_attempts, "max_restarts": max_restarts,
            **POLICY_COLUMNS, **(policy or {})}
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
