"""Database URLs, engines, retries and error messages without passwords.

The one place that knows how to reach a database: it turns the user's URL into an engine
(PostgreSQL or the embedded SQLite file), decides which failures are worth retrying, and
turns the rest into one-line :class:`~dbdict_worker.errors.DbdictError` messages.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, TypeVar

import sqlalchemy as sa
import tenacity
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
# What every query function takes; the store names the type from here, not from SQLAlchemy.
from sqlalchemy.engine import Connection as Connection

from dbdict_worker.errors import DatabaseUnavailable, SchemaError, UsageError
from dbdict_worker.names import check_table_name

log = logging.getLogger("dbdict_worker.db")

DEFAULT_SQLITE_FILE = "dbdict.sqlite"
#: How long a call keeps retrying a database that is away before giving up (seconds).
DEFAULT_RETRY_SECONDS = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where to connect: the SQLAlchemy URL and the table named in it, if any."""

    url: URL
    table: str | None
    implicit: bool = False  # True when no URL was given and the default SQLite file is used

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, fit for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"


def parse_url(text: str | None) -> Target:
    """Parse a database URL; ``None`` or empty means the embedded ``./dbdict.sqlite``.

    The original form ``postgresql://user@host/db/TABLE`` also names the table.
    """
    if not text:
        return Target(make_url(f"sqlite:///{DEFAULT_SQLITE_FILE}"), None, implicit=True)
    if "://" not in text:
        raise UsageError(
            "database URL must look like postgresql://user@host/db[/table] or sqlite:///path"
        )
    try:
        url = make_url(text)
    except Exception:  # sqlalchemy.exc.ArgumentError, ValueError: both just mean "malformed"
        raise UsageError("malformed database URL (postgresql://user@host/db[/table] or "
                         "sqlite:///path)") from None
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
        table = None
        if url.database and "/" in url.database:
            db, table = url.database.split("/", 1)
            url = url.set(database=db)
            # One name after the database: postgresql://host/db/a/b is an error, not table "a/b".
            table = check_table_name(table[:-1] if table.endswith("/") else table) \
                if table.strip("/") else None
        return Target(url, table)
    if backend == "sqlite":
        return Target(url, None)
    raise UsageError(f"unsupported database {backend!r}: use postgresql:// or sqlite:///")


def create_engine(target: Target) -> Engine:
    """An engine tuned for our use: keepalives and a connect timeout on PostgreSQL; WAL,
    foreign keys and writer-serializing ``BEGIN IMMEDIATE`` transactions on SQLite."""
    if target.is_sqlite:
        engine = sa.create_engine(target.url, connect_args={"timeout": 30})
        _setup_sqlite(engine)
        return engine
    # No pool_pre_ping: it costs a round trip per transaction, and a connection that died in
    # the pool fails its first statement with a disconnect error, which the Retrier retries
    # on a fresh connection (SQLAlchemy invalidates the pool on disconnects).
    return sa.create_engine(
        target.url,
        pool_size=2,
        max_overflow=4,
        connect_args={
            "connect_timeout": 10,
            "application_name": "dbdict-worker",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            # And while a statement is unanswered: a connection whose peer vanished (a pulled
            # cable) fails within a minute instead of a quarter of an hour of retransmissions.
            "tcp_user_timeout": 60000,
        },
    )


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is lazy).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # Take the write lock up front: a deferred transaction that later writes can fail
        # with "database is locked" without waiting; IMMEDIATE waits for busy_timeout instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# --------------------------------------------------------------------------------------------
# Which failures are transient


_TRANSIENT_PGCODES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown (server restart)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (server starting up)
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
}
_PERMANENT_MARKERS = (
    "authentication failed",
    "no password supplied",
    "password authentication",
    "does not exist",
    "role ",
    "permission denied",
    "pg_hba.conf",
    "ssl is not enabled",
    "invalid dsn",
    "could not translate host name",
    # libpq's refusals of the URL's own options (?sslmode=bogus, ?connect_timeout=abc,
    # ?port=x, a missing sslrootcert): no retry fixes the URL.
    "invalid connection option",
    "invalid integer value",
    "invalid port number",
    "for connection option",
    "certificate file",
)
#: libpq's "invalid sslmode value", "invalid gssencmode value", "invalid target_session_attrs
#: value"...: one rule for every option it checks against a list.
_INVALID_OPTION = re.compile(r"invalid \w+ value")


@contextmanager
def sent_statements(target: Engine | sa.Connection) -> Iterator[list[tuple[str, Any]]]:
    """Collect ``(SQL text, parameters)`` of every statement ``target`` (an engine or one
    connection) sends inside the block, exactly as the driver receives them: for EXPLAIN of
    the real booking statement, and for benchmarks that replay it bare."""
    sent: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        sent.append((statement, parameters))

    event.listen(target, "before_cursor_execute", grab)
    try:
        yield sent
    finally:
        event.remove(target, "before_cursor_execute", grab)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may go away: dropped connections, a restarting server,
    serialization failures and deadlocks, a busy SQLite file."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None)
    if code:
        return code in _TRANSIENT_PGCODES or code.startswith("08")
    if isinstance(orig, sqlite3.OperationalError):
        msg = str(orig).lower()
        return "locked" in msg or "busy" in msg
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        msg = str(orig).lower()
        return not (any(m in msg for m in _PERMANENT_MARKERS) or _INVALID_OPTION.search(msg))
    return False


#: PostgreSQL's undefined_table, undefined_column: the schema's version table says current,
#: its tables say otherwise (dropped or altered by hand).
#: duplicate_table: tables there without the version table (``dbdict db upgrade`` fails).
_MISSING_PGCODES = {"42P01", "42703", "42P07"}


def is_schema_damage(exc: BaseException) -> bool:
    """True when a statement failed because one of our tables or columns is missing."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None)
    if code:
        return code in _MISSING_PGCODES
    if isinstance(orig, sqlite3.OperationalError):
        msg = str(orig).lower()
        return msg.startswith(("no such table", "no such column")) or \
            "has no column named" in msg or (msg.startswith("table ") and
                                             msg.endswith("already exists"))
    return False


def describe(exc: BaseException, target: Target) -> str:
    """One line describing a database failure, with any password scrubbed."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).strip().splitlines() if ln.strip()]
    text = " ".join(lines) or type(orig).__name__
    pw = target.url.password
    if pw:
        text = text.replace(str(pw), "***")
    return text


class OutageWatcher(Protocol):
    """Told by a :class:`Retrier` of a call's first transient failure and of every call that
    succeeds; it decides what an outage is and what to say about it."""

    def failed(self, why: str, retrying_for: float) -> None: ...

    def succeeded(self) -> None: ...


class OutageLog:
    """The default watcher: logs an outage once when it starts and once when it ends."""

    def __init__(self, target: Target, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.clock = clock
        self.failing = False
        #: clock() when a call last succeeded after failing (an outage ended).
        self.recovered_at: float | None = None

    def failed(self, why: str, retrying_for: float) -> None:
        if not self.failing:
            self.failing = True
            log.warning("database %s: %s; retrying for up to %gs", self.target.safe_url, why,
                        retrying_for)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self.recovered_at = self.clock()
            log.warning("database %s is reachable again", self.target.safe_url)


class Retrier:
    """Runs a callable, retrying transient database failures with exponential backoff and
    jitter for up to ``seconds``; tells ``watcher`` (by default an :class:`OutageLog`) when a
    call fails and when one succeeds."""

    def __init__(self, target: Target, seconds: float = DEFAULT_RETRY_SECONDS, *,
                 watcher: OutageWatcher | None = None) -> None:
        self.target = target
        self.seconds = seconds
        self.watcher: OutageWatcher = watcher if watcher is not None else OutageLog(target)

    @property
    def recovered_at(self) -> float | None:
        """When the default watcher last saw an outage end (time.monotonic()), else None."""
        return self.watcher.recovered_at if isinstance(self.watcher, OutageLog) else None

    def __call__(self, fn: Callable[[], T]) -> T:
        try:
            try:
                result = fn()  # the common case pays for no retry machinery
            except sa.exc.DBAPIError as exc:
                if not is_transient(exc):
                    raise
                self.watcher.failed(describe(exc, self.target), self.seconds)
                result = tenacity.Retrying(
                    retry=tenacity.retry_if_exception(is_transient),
                    wait=tenacity.wait_random_exponential(multiplier=0.05, max=5.0),
                    stop=tenacity.stop_after_delay(self.seconds),
                    reraise=True,
                )(fn)
        except sa.exc.DBAPIError as exc:
            msg = describe(exc, self.target)
            if is_schema_damage(exc):
                what = msg.split(" LINE ", 1)[0]  # PostgreSQL's excerpt of the SQL: noise
                raise SchemaError(
                    f"damaged dbdict schema in {self.target.safe_url}: {what} (`dbdict db "
                    f"upgrade` does not repair tables changed by hand: restore a backup)"
                ) from None
            if is_transient(exc):
                raise DatabaseUnavailable(
                    f"database {self.target.safe_url} unreachable after {self.seconds:g}s "
                    f"of retries: {msg}"
                ) from None
            if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
                raise DatabaseUnavailable(
                    f"cannot use database {self.target.safe_url}: {msg}"
                ) from None
            raise
        self.watcher.succeeded()
        return result


def retry_seconds_from_env(default: float = DEFAULT_RETRY_SECONDS) -> float:
    """``DBDICT_RETRY_SECONDS`` overrides how long database calls retry."""
    raw = os.environ.get("DBDICT_RETRY_SECONDS")
    if not raw:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise UsageError(f"DBDICT_RETRY_SECONDS must be a number of seconds, got {raw!r}") from None
