"""The store: the library API over the database, used by the commands and the worker.

>>> from dbdict_worker.store import Store
>>> with Store.open("postgresql://me@dbhost/experiments/sweep1") as store:
...     store.enqueue("mypkg.train.run", [{"lr": 0.1}, {"lr": 0.01}])

Every method runs in its own transaction and retries transient database failures (dropped
connections, restarts, serialization failures) with backoff for ``retry_seconds``.
"""
from __future__ import annotations

import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from dbdict_worker import retrying
from dbdict_worker import state as statemod
from dbdict_worker.constants import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PRIORITY,
    DEFAULT_TABLE,
    Status,
)
from dbdict_worker import export as exportmod
from dbdict_worker.db import connect, logs, maintenance, migrate, queries, queue, views
from dbdict_worker.db import enqueue as enqueueq
from dbdict_worker.storemetrics import MetricCalls
from dbdict_worker.storequeue import QueueCalls
from dbdict_worker.db import workers as workerq
from dbdict_worker.db.connect import Connection
from dbdict_worker.db.provenance import attach as attach_submissions
from dbdict_worker.db.models import (
    Booking,
    Completion,
    EnqueueResult,
    Event,
    Job,
    Rescued,
    Selection,
    Token,
    WorkerRow,
)
from dbdict_worker.errors import DatabaseUnavailable, NotFound, UsageError
from dbdict_worker.names import check_table_name, table_list
from dbdict_worker import waiting
from dbdict_worker.waiting import WaitResult

log = logging.getLogger("dbdict_worker")

T = TypeVar("T")
#: Jobs inserted per statement batch by enqueue.
ENQUEUE_CHUNK = 2000


class Store(QueueCalls, MetricCalls):
    """A connection to a dbdict database (PostgreSQL or SQLite)."""

    def __init__(self, target: connect.Target, *, table: str | None = None,
                 retry_seconds: float | None = None) -> None:
        self.target = target
        #: The default table: from the option, else from the URL, else None.
        self.table = table or target.table
        self.engine = connect.create_engine(target)
        seconds = connect.retry_seconds_from_env() if retry_seconds is None else retry_seconds
        self.retry = connect.Retrier(target, seconds)
        self._booking_tables: dict[tuple[str, ...] | None, tuple[int, ...] | None] = {}

    # ---------------------------------------------------------------------------------------
    # Opening and schema

    @classmethod
    def open(cls, url: str | None = None, *, table: str | None = None,
             retry_seconds: float | None = None, check_schema: bool = True) -> "Store":
        """Open a store from a URL (``None``: the embedded ``./dbdict.sqlite``).

        A SQLite file that does not exist yet is created with the current schema. Otherwise
        the schema must be current (``dbdict db upgrade``) unless ``check_schema`` is False.
        """
        target = connect.parse_url(url)
        store = cls(target, table=table, retry_seconds=retry_seconds)
        try:
            if store._is_new_sqlite():
                store.upgrade()
                if target.implicit:
                    log.info("no --db or DBDICT_DB given: created the SQLite file ./%s",
                             target.url.database)
                else:
                    log.info("created the dbdict schema in %s", store.where)
            elif check_schema:
                store.check_schema()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def where(self) -> str:
        """The database, for messages (password masked)."""
        return self.target.safe_url

    def _is_new_sqlite(self) -> bool:
        if not self.target.is_sqlite:
            return False
        path = self.target.url.database
        return not path or path == ":memory:" or not os.path.exists(path) \
            or os.path.getsize(path) == 0

    def upgrade(self) -> tuple[str | None, str]:
        """Create or migrate the schema; returns (revision before, revision after)."""
        return self.retry(lambda: migrate.upgrade(self.engine))

    def check_schema(self) -> None:
        """Raise SchemaError unless the schema is at this code's revision."""
        def run() -> None:
            with self.engine.connect() as conn:
                migrate.check(conn, self.where)
        self.retry(run)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_retry(self, seconds: float, *,
                   watcher: connect.OutageWatcher | None = None) -> "Store":
        """This store on the same connections (closing either closes both), with calls that
        retry for ``seconds`` and report failures to ``watcher``: the worker retries each call
        briefly and tracks longer outages itself."""
        import copy

        other = copy.copy(self)
        other.retry = connect.Retrier(self.target, seconds, watcher=watcher)
        return other

    def transaction(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction, retried as a whole on transient failures."""
        def run() -> T:
            with self.engine.begin() as conn:
                return fn(conn)
        return self.retry(run)

    def _statement(self, fn: Callable[[Connection], T]) -> T:
        """Like :meth:`transaction`, for an ``fn`` whose writes are one statement: on
        PostgreSQL it runs in autocommit, each statement its own transaction, which saves
        the round trips of BEGIN and COMMIT (the hot calls of every worker)."""
        if self.target.is_sqlite:  # BEGIN IMMEDIATE is what serializes SQLite's writers
            return self.transaction(fn)

        def run() -> T:
            with self.engine.connect() as conn:
                # psycopg2's own switch: SQLAlchemy's isolation_level="AUTOCOMMIT" resets
                # the level through set_isolation_level twice per call, as slow as the
                # statement's planning. In autocommit psycopg2 sends no BEGIN, and the
                # rollback SQLAlchemy does when the connection goes back to its pool is a
                # no-op.
                raw = conn.connection.dbapi_connection
                raw.autocommit = True
                try:
                    return fn(conn)
                finally:
                    if not raw.closed:
                        raw.autocommit = False
        return self.retry(run)

    # ---------------------------------------------------------------------------------------
    # Tables and selections

    def tables(self) -> list[str]:
        """Names of the job tables."""
        return self.transaction(queries.table_names)

    def _table_ids(self, conn: Connection, names: Sequence[str] | None) -> tuple[int, ...] | None:
        if names is None:
            return None
        found = queries.table_ids(conn, names)
        missing = [n for n in names if n not in found]
        if missing:
            existing = ", ".join(queries.table_names(conn)) or "none yet"
            raise NotFound(f"no table {missing[0]!r} in {self.where} (tables: {existing})")
        return tuple(found[n] for n in names)

    def _existing_table_ids(self, conn: Connection,
                            names: Sequence[str] | None) -> tuple[int, ...] | None:
        if names is None:
            return None
        found = queries.table_ids(conn, names)
        return tuple(found[n] for n in names if n in found)

    def _tables_arg(self, tables: Sequence[str] | str | None) -> list[str] | None:
        if isinstance(tables, str):
            return [tables]
        if tables is None and self.table:
            return table_list(self.table)  # a comma list selects those tables
        return list(tables) if tables is not None else None

    def selection(self, conn: Connection, *, tables: Sequence[str] | str | None = None,
                  ids: Iterable[int] | None = None,
                  statuses: Iterable[Status | str | int] | None = None,
                  where: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None) -> Selection:
        """Build a Selection; table names are checked (NotFound names the existing ones)."""
        if isinstance(where, Mapping):
            where = list(where.items())
        return Selection(
            table_ids=self._table_ids(conn, self._tables_arg(tables)),
            ids=tuple(ids) if ids is not None else None,
            statuses=tuple(Status.parse(s) for s in statuses) if statuses is not None else None,
            where=tuple(where or ()),
        )

    # ---------------------------------------------------------------------------------------
    # Enqueue

    def enqueue(self, experiment: str, states: Iterable[Mapping[str, Any]], *,
                table: str | None = None, priority: float = DEFAULT_PRIORITY,
                force: bool = False, repeat: int = 1, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                max_restarts: int = DEFAULT_MAX_RESTARTS,
                policy: Mapping[str, Any] | None = None,
                submission: Mapping[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> EnqueueResult:
        """Add one job per state (times ``repeat``) in one transaction; ``states`` is read a
        chunk at a time (any iterable: memory does not grow with their number).

        States are flat (dotted keys) or nested mappings; each is checked (types, reserved
        ``dbdict.*`` keys), and one bad state anywhere rolls the whole enqueue back. A job
        equal to an existing one (same table, experiment, parameters and repeat index) is
        skipped unless ``force``. ``max_restarts``: how many INCOMPLETE returns in a row
        without new progress a job may make before it ends ERR_RUN. ``policy``: retries and
        limits, as columns of :data:`~dbdict_worker.db.enqueueq.POLICY_COLUMNS`. ``submission``:
        this enqueue's provenance, as columns of ``submissions`` (recorded once, every job
        made points to it).
        ``progress(n)`` is called after each batch with the number of jobs handled so far.
        """
        if not experiment or not isinstance(experiment, str):
            raise UsageError("an experiment (a dotted path such as mypkg.train.run) is needed")
        if repeat < 1:
            raise UsageError("--repeat must be at least 1")
        if max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        if max_restarts < 0:
            raise UsageError("max_restarts must be at least 0")
        table = check_table_name(table or self.table or DEFAULT_TABLE)
        # States are read a chunk at a time, so memory stays bounded whatever their number. A
        # list (or params.Combinations) can be read again by a retried transaction; a
        # generator cannot, so a retry after it was started fails instead (nothing written).
        one_shot, started = iter(states) is states, [False]
        chunk = max(1, ENQUEUE_CHUNK // repeat)
        dialect = self.engine.dialect.name

        def prepare(batch: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, Any]]:
            items = []
            for st in batch:
                flat = statemod.flatten(st)
                statemod.check_user_keys(flat)
                h = statemod.param_hash(flat, checked=True)
                payload = enqueueq.prepare_state(dialect, flat)
                items.extend((h, r, payload) for r in range(repeat))
            return items

        def store(conn: Connection, table_id: int, items: list) -> tuple[list[int], int]:
            return enqueueq.insert_jobs(conn, table_id=table_id, experiment=experiment,
                                     items=items, priority=float(priority),
                                     max_attempts=max_attempts, max_restarts=max_restarts,
                                     policy=job_policy, force=force)

        job_policy = retrying.check_policy(policy)  # the CLI's checks, for Python callers too

        def run(conn: Connection) -> EnqueueResult:
            table_id = enqueueq.ensure_table(conn, table)
            if submission is not None:
                job_policy["submission_id"] = enqueueq.insert_submission(conn, submission)
            created: list[int] = []
            skipped = 0
            # The next batch is checked and encoded here while a helper thread stores the
            # previous one (the database waits are in libpq, outside the GIL). Leaving the
            # executor waits for that thread, so the transaction never ends under it; a bad
            # value in any batch rolls the whole enqueue back.
            if one_shot and started[0]:
                raise DatabaseUnavailable("the database failed during the enqueue, whose jobs "
                                          "came from a one-shot iterator: nothing was written")
            started[0] = True
            source, start = iter(states), 0
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = None
                while batch := list(itertools.islice(source, chunk)):
                    items = prepare(batch)
                    if pending is not None:
                        new, dup = pending.result()
                        created += new
                        skipped += dup
                        if progress:
                            progress(start * repeat)
                    pending = pool.submit(store, conn, table_id, items)
                    start += len(batch)
                if pending is not None:
                    new, dup = pending.result()
                    created += new
                    skipped += dup
            if created:
                workerq.notify(conn, workerq.JOBS_CHANNEL, table)
            if progress:
                progress(start * repeat)
            return EnqueueResult(created, skipped)

        result = self.transaction(run)
        if len(result.created) >= maintenance.STATS_MIN_ROWS:
            # After the commit, in a short transaction of its own: ANALYZE inside the enqueue
            # would hold a lock that a concurrent enqueue could wait on while we wait on it.
            self.transaction(lambda c: maintenance.refresh_stale_stats(c, len(result.created)))
        return result

    # ---------------------------------------------------------------------------------------
    # Reading

    def jobs(self, *, limit: int | None = None, **select: Any) -> list[Job]:
        """Jobs matching the selection (see :meth:`selection`), by id."""
        return self.transaction(
            lambda c: queries.select_jobs(c, self.selection(c, **select), limit=limit))

    def jobs_with_state(self, *, limit: int | None = None,
                        **select: Any) -> list[tuple[Job, dict[str, Any]]]:
        """Like :meth:`jobs`, each with its flat user state."""
        def run(conn: Connection) -> list[tuple[Job, dict[str, Any]]]:
            found = attach_submissions(
                conn, queries.select_jobs(conn, self.selection(conn, **select), limit=limit))
            states = queries.select_state(conn, [j.id for j in found])
            return [(j, states[j.id]) for j in found]
        return self.transaction(run)

    def iter_jobs_with_state(self, **select: Any) -> Iterator[tuple[Job, dict[str, Any]]]:
        """Stream every matching job with its state (for exports of any size)."""
        with self.engine.connect() as conn:
            sel = self.retry(lambda: self.selection(conn, **select))
            yield from queries.iter_jobs_with_state(conn, sel)

    def job(self, job_id: int) -> tuple[Job, dict[str, Any]]:
        """One job and its flat user state; NotFound if there is no such job."""
        def run(conn: Connection) -> tuple[Job, dict[str, Any]]:
            # Ids are unique across tables, so the default table does not restrict this.
            found = attach_submissions(conn, queries.select_jobs(conn, Selection(ids=(job_id,))))
            if not found:
                raise NotFound(f"no job {job_id} in {self.where}")
            return found[0], queries.select_state(conn, [job_id])[job_id]
        return self.transaction(run)

    def events(self, job_id: int) -> list[Event]:
        """A job's history, oldest first."""
        return self.transaction(lambda c: queries.select_events(c, job_id))

    def counts(self, **select: Any) -> dict[tuple[str, Status], int]:
        """Number of jobs per (table, status)."""
        return self.transaction(
            lambda c: queries.count_by_status(c, self.selection(c, **select)))

    def counts_by(self, key: str, **select: Any) -> list[tuple[Any, Status, int]]:
        """Number of jobs per (value of ``key``, status); jobs without the key count
        under ``dbdict_worker.db.models.MISSING``."""
        return self.transaction(
            lambda c: queries.count_by_key(c, self.selection(c, **select), key))

    def wait(self, *, timeout: float | None = None, **kwargs: Any) -> WaitResult:
        """Block until no selected job is START or RUNNING (or ``timeout`` seconds pass);
        see :func:`dbdict_worker.waiting.wait`."""
        return waiting.wait(self, timeout=timeout, **kwargs)

    # ---------------------------------------------------------------------------------------
    # Results

    def create_view(self, name: str, **select: Any) -> list[str]:
        """(Re)create the flat SQL view ``name``; returns its column names."""
        return self.transaction(
            lambda c: views.create_view(c, name, self.selection(c, **select)))

    def drop_view(self, name: str) -> None:
        """Drop the view ``name`` (NotFound if there is no such view)."""
        self.transaction(lambda c: views.drop_view(c, name))

    def export(self, out: IO[str], *, fmt: str = "csv", json_nan: str = "string",
               **select: Any) -> int:
        """Write the selected jobs to ``out`` as CSV, JSON or an aligned text table; returns
        the number written. ``json_nan``: how JSON writes NaN and infinities
        (:data:`dbdict_worker.export.JSON_NAN_FORMS`)."""
        if fmt not in ("csv", "json", "table"):
            raise UsageError(f"unknown export format {fmt!r} (csv, json or table)")
        with self.engine.connect() as conn:
            sel = self.retry(lambda: self.selection(conn, **select))
            rows = queries.iter_jobs_with_state(conn, sel)
            if fmt == "json":
                return exportmod.write_json(out, rows, nan=json_nan)
            if fmt == "csv" and not self.target.is_sqlite:
                # The server pivots and formats (COPY), ~10x faster than Python for big
                # exports; tests check it writes what write_csv writes. The keys of every
                # job come from the state index (key_names), not a read of all the state.
                names = self.retry(lambda: queries.key_names(conn, sel))
                if names is None:
                    names = sorted(self.retry(lambda: queries.key_types(conn, sel)))
                counter = exportmod.LineCounter(out)
                views.copy_out(conn, views.csv_select(conn, sel, names), counter)
                counter.flush()
                conn.rollback()
                return counter.rows
            keys = self.retry(lambda: queries.key_types(conn, sel))
            if fmt == "table":
                return exportmod.write_table(out, keys, rows)
            return exportmod.write_csv(out, keys, rows)

    def dataframe(self, table: Sequence[str] | str | None = None, where: Any = None,
                  statuses: Any = None, ids: Iterable[int] | None = None) -> Any:
        """The selected jobs as a pandas DataFrame with the view's columns and types (the
        ``pandas`` extra; see :mod:`dbdict_worker.frames`)."""
        from dbdict_worker import frames
        return frames.dataframe(self, tables=table, where=where, statuses=statuses, ids=ids)

    def metrics(self, ids: Iterable[int] | None = None, **select: Any) -> Any:
        """The selected jobs' reported metrics as a DataFrame (table=, where=, statuses=,
        keys=, attempt=, wide=; see :mod:`dbdict_worker.curves`)."""
        from dbdict_worker import curves
        return curves.metrics(self, ids, **select)

    # ---------------------------------------------------------------------------------------
    # Changes a user asks for (each returns the ids changed)

    def cancel(self, **select: Any) -> list[int]:
        """Cancel queued and running jobs."""
        return self.transaction(lambda c: queries.cancel(c, self.selection(c, **select)))

    def requeue(self, *, priority: float | None = None, **select: Any) -> list[int]:
        """Put finished, failed and cancelled jobs back in the queue."""
        def run(conn: Connection) -> list[int]:
            ids = queries.requeue(conn, self.selection(conn, **select), priority=priority)
            if ids:
                workerq.notify(conn, workerq.JOBS_CHANNEL)
            return ids
        return self.transaction(run)

    def set_priority(self, priority: float, **select: Any) -> list[int]:
        """Change the priority of the selected jobs."""
        return self.transaction(
            lambda c: queries.set_priority(c, self.selection(c, **select), float(priority)))

    def delete(self, **select: Any) -> list[int]:
        """Delete the selected jobs, their state and their history."""
        return self.transaction(lambda c: queries.delete(c, self.selection(c, **select)))

    def requeue_stale(self, lease_seconds: float, *, by_worker: str | None = None) -> list[Rescued]:
        """Requeue RUNNING jobs whose heartbeat is older than the lease (their owner stopped
        heartbeating): back to START at RESTART_PRIORITY, counting a loss, or ERR_RUN once
        lost ``max_attempts`` times."""
        def run(conn: Connection) -> list[Rescued]:
            rescued = queue.requeue_stale(conn, lease_seconds=lease_seconds,
                                          by_worker=by_worker)
            if any(r.status == Status.START for r in rescued):
                workerq.notify(conn, workerq.JOBS_CHANNEL)
            return rescued
        return self.transaction(run)

    # ---------------------------------------------------------------------------------------
    # Workers

    def register_worker(self, worker_id: str, host: str, pid: int, slots: int,
                        tables: Sequence[str] | None) -> list[str]:
        """Record a starting worker; returns those of its tables that do not exist yet (a
        worker may start before the first enqueue)."""
        def run(conn: Connection) -> list[str]:
            found = queries.table_ids(conn, tables) if tables else {}
            workerq.register(conn, worker_id=worker_id, host=host, pid=pid, slots=slots,
                             tables=tables)
            return [t for t in tables or () if t not in found]
        return self.transaction(run)

    def worker_beat(self, worker_id: str, state: str,
                    tokens: Sequence[Token]) -> tuple[bool, set[int], set[int]]:
        """The worker's heartbeat and its jobs': (drain requested?, ids still owned, those of
        them to prune)."""
        return self.transaction(lambda c: workerq.beat(c, worker_id, state, tokens))

    def set_worker_state(self, worker_id: str, state: str) -> None:
        """running, draining, stopping or stopped."""
        self.transaction(lambda c: workerq.set_state(c, worker_id, state))

    def request_drain(self, *, worker_id: str | None = None, host: str | None = None,
                      lease: float | None = None) -> list[str]:
        """Ask running workers to drain (all of them when neither is given); with ``lease``,
        not the lost ones (heartbeat older than that: see :meth:`lost_workers`)."""
        return self.transaction(
            lambda c: workerq.request_drain(c, worker_id=worker_id, host=host, lease=lease))

    def lost_workers(self, lease: float, *, worker_id: str | None = None,
                     host: str | None = None) -> list[str]:
        """Workers recorded as running whose heartbeat is older than ``lease`` seconds."""
        return self.transaction(
            lambda c: workerq.lost(c, lease, worker_id=worker_id, host=host))

    def workers(self, *, include_stopped: bool = False) -> list[WorkerRow]:
        """Workers with heartbeat ages (database clock) and the jobs they run."""
        return self.transaction(lambda c: workerq.select(c, include_stopped=include_stopped))

    # ---------------------------------------------------------------------------------------
    # Output tails (db/logs.py)

    def put_log_tails(self, rows: Sequence[logs.LogTail]) -> int:
        """Store the tails of attempts' stdout/stderr (one upsert); returns the rows sent."""
        return self.transaction(lambda c: logs.upsert(c, rows)) if rows else 0

    def log_tails(self, job_id: int, attempt: int | None = None) -> list[logs.LogTail]:
        """The kept tails of one attempt of a job (None: its latest attempt with any)."""
        return self.transaction(lambda c: logs.select(c, job_id, attempt))


__all__ = ["Store", "Booking", "Completion", "EnqueueResult", "Job", "Token", "Event",
           "Rescued", "Selection"]
