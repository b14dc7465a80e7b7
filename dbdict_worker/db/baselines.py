"""What the bench measures the library against, on bare psycopg2 connections (PostgreSQL):
the smallest queue one could write, and COPY of the same rows in and out with no library in
between. The bench also replays the Store's own statements here (captured from the Store,
see :func:`dbdict_worker.db.connect.sent_statements`)."""
from __future__ import annotations

import contextlib
import io
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import psycopg2
from psycopg2 import sql

if TYPE_CHECKING:  # not loaded: the bench's bare workers start faster without SQLAlchemy
    from sqlalchemy.engine import Engine

# The smallest queue one could write: claim and finish, no events, no state, no library. Its
# parameters are named like the Store's statements', so one bare worker runs either.
_MINIMAL_CLAIM = """
WITH picked AS (
    SELECT id FROM jobs WHERE status = 0 AND table_id = %(table_ids_1)s
    ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE jobs SET status = 1, attempts = jobs.attempts + 1, worker_id = %(new_worker)s,
    host = 'bench', booked_at = now(), heartbeat_at = now(), updated_at = now()
FROM picked WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.attempts
"""
_MINIMAL_FINISH = """
UPDATE jobs SET status = 2, finished_at = now(), updated_at = now(), heartbeat_at = now()
WHERE id = %(own_id)s AND worker_id = %(own_worker)s AND attempts = %(own_attempt)s
    AND status = 1
RETURNING id
"""
#: {"book" and "finish": (SQL, parameters)}, like the bench's capture of the Store's.
MINIMAL_QUEUE = {"book": (_MINIMAL_CLAIM, {"table_ids_1": None}),
                 "finish": (_MINIMAL_FINISH, {})}


def scratch_rows(states: Iterable[Mapping[str, Any]]) -> tuple[io.StringIO, io.StringIO]:
    """COPY text of the jobs and of their key/value rows, for :meth:`Bare.copy_into_scratch`."""
    jobs_buf, state_buf = io.StringIO(), io.StringIO()
    for i, st in enumerate(states):
        jobs_buf.write(f"{i}\tbench.noop\n")
        for k, v in st.items():
            state_buf.write(f"{i}\t{k}\t{v!r}\n")
    jobs_buf.seek(0)
    state_buf.seek(0)
    return jobs_buf, state_buf


class Bare:
    """A psycopg2 connection with nothing in between: no SQLAlchemy, no retries."""

    def __init__(self, dbapi_connection: Any) -> None:
        self.connection = dbapi_connection
        self.cursor = dbapi_connection.cursor()

    @classmethod
    def connect(cls, url: str) -> "Bare":
        """A new connection to ``url`` (a SQLAlchemy or libpq URL, password included)."""
        return cls(psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://")))

    @classmethod
    def borrow(cls, engine: Engine) -> "Bare":
        """The DBAPI connection of one of ``engine``'s pooled connections (close gives it
        back)."""
        return cls(engine.raw_connection())

    def __enter__(self) -> "Bare":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute ``sql`` (a statement that returns rows); its rows, by column name."""
        self.cursor.execute(sql, params)
        rows = self.cursor.fetchall()
        names = [c.name for c in self.cursor.description]
        return [dict(zip(names, r)) for r in rows]

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    def close(self) -> None:
        self.connection.close()

    def copy_state_out(self, first_id: int, last_id: int, out: IO[str]) -> None:
        """COPY the state rows of the jobs ``first_id`` to ``last_id`` out as CSV,
        unpivoted (job_id, key, txt)."""
        self.cursor.copy_expert(
            f"COPY (SELECT job_id, key, txt FROM state WHERE job_id BETWEEN {int(first_id)} "
            f"AND {int(last_id)} ORDER BY job_id, key) TO STDOUT WITH CSV", out)

    def create_scratch_tables(self) -> None:
        """Two unindexed temporary tables, for :meth:`copy_into_scratch`."""
        self.cursor.execute("CREATE TEMP TABLE bench_jobs (id bigint, experiment text)")
        self.cursor.execute("CREATE TEMP TABLE bench_state (job_id bigint, key text, txt text)")

    def copy_into_scratch(self, jobs_rows: IO[str], state_rows: IO[str]) -> None:
        """COPY :func:`scratch_rows` into the scratch tables."""
        self.cursor.copy_expert("COPY bench_jobs FROM STDIN", jobs_rows)
        self.cursor.copy_expert("COPY bench_state FROM STDIN", state_rows)


# ---------------------------------------------------------------------------------------------
# Scratch databases (the peers' figures: each peer in a database of its own)


def libpq_url(url: str, database: str | None = None) -> str:
    """``url`` (SQLAlchemy or libpq form) as a plain ``postgresql://`` URL that psycopg2 and
    asyncpg both accept, optionally pointing at another database; password kept."""
    from sqlalchemy.engine import make_url  # here: the bare workers import this module

    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _admin(admin_url: str, statement: Any) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE refuse one)."""
    conn = psycopg2.connect(libpq_url(admin_url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            if callable(statement):
                statement = statement(conn.server_version)
            cur.execute(statement)
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[str]:
    """Create the empty database ``name`` on ``admin_url``'s server, yield its URL, drop it
    afterwards (forcing other sessions off on PostgreSQL 13+), also when the body fails."""
    ident = sql.Identifier(name)
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield libpq_url(admin_url, name)
    finally:
        # FORCE: a consumer killed mid-run may leave its session behind for a moment.
        _admin(admin_url, lambda version: sql.SQL(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)" if version >= 130000
            else "DROP DATABASE IF EXISTS {}").format(ident))
