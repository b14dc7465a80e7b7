"""SQL of ``dbdict search``: the search's row, its trials (jobs with ``search_id`` and
``trial``), their intermediate values, prune requests, and the lock that lets one driver act.

Like :mod:`.queries`, each function takes a connection inside the caller's transaction.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dbdict_worker.constants import Status
from dbdict_worker.db import enqueue as enqueueq
from dbdict_worker.db import workers as workerq
from dbdict_worker.db.queries import select_state
from dbdict_worker.db.schema import db_now, job_tables, jobs, metrics, searches

#: The columns of ``searches`` a driver's arguments set.
SEARCH_FIELDS = ("table_id", "experiment", "space", "objective", "direction", "sampler",
                 "pruner", "budget", "max_pending", "seed", "options")


@dataclass(frozen=True)
class TrialRow:
    """One trial: its job, number, status and flat state (params, and results once DONE)."""

    job_id: int
    trial: int
    status: Status
    state: dict[str, Any]


def get_search(conn: Connection, name: str) -> dict[str, Any] | None:
    """The search named ``name`` (a dict of its columns, plus ``table``), or None."""
    row = conn.execute(
        sa.select(searches, job_tables.c.name.label("table"))
        .select_from(searches.join(job_tables, job_tables.c.id == searches.c.table_id))
        .where(searches.c.name == name)).mappings().first()
    return dict(row) if row is not None else None


def create_search(conn: Connection, name: str, fields: Mapping[str, Any]) -> int:
    """Insert a search; its id."""
    return conn.execute(sa.insert(searches).values(name=name, **fields)
                        .returning(searches.c.id)).scalar_one()


def set_finished(conn: Connection, search_id: int, finished: bool) -> None:
    """Mark the search finished now (or not finished)."""
    conn.execute(sa.update(searches).where(searches.c.id == search_id)
                 .values(finished_at=db_now() if finished else None))


def trials(conn: Connection, search_id: int, *, job_ids: Sequence[int] | None = None,
           with_state: bool = True) -> list[TrialRow]:
    """The search's trials by number (only ``job_ids`` if given)."""
    stmt = (sa.select(jobs.c.id, jobs.c.trial, jobs.c.status)
            .where(jobs.c.search_id == search_id).order_by(jobs.c.trial))
    if job_ids is not None:
        stmt = stmt.where(jobs.c.id.in_(list(job_ids)))
    rows = conn.execute(stmt).all()
    states = select_state(conn, [r[0] for r in rows]) if with_state else {}
    return [TrialRow(r[0], r[1], Status(r[2]), states.get(r[0], {})) for r in rows]


def enqueue_trial(conn: Connection, *, search_id: int, table: str, experiment: str,
                  flat: Mapping[str, Any], params_hash: str, max_attempts: int,
                  policy: Mapping[str, Any] | None) -> tuple[int, int]:
    """Add the next trial's job: the job and its number are one transaction (the caller's),
    so a driver killed before the commit leaves neither. Returns (job id, trial number).

    Equal parameters in two trials make two jobs (``force``): the second is an extra copy
    rather than a duplicate skipped, since each trial is a sample the sampler counts.
    """
    # The search's row locked: even two drivers that both believed they held the lock
    # (a dropped lock connection) could not give two jobs one number (SQLite: one writer).
    conn.execute(sa.select(searches.c.id).where(searches.c.id == search_id).with_for_update())
    number = conn.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.trial) + 1, 0))
                          .where(jobs.c.search_id == search_id)).scalar_one()
    table_id = enqueueq.ensure_table(conn, table)
    payload = enqueueq.prepare_state(conn.dialect.name, flat)
    ids, _ = enqueueq.insert_jobs(conn, table_id=table_id, experiment=experiment,
                               items=[(params_hash, 0, payload)], priority=1.0,
                               max_attempts=max_attempts, policy=policy, force=True)
    conn.execute(sa.update(jobs).where(jobs.c.id == ids[0])
                 .values(search_id=search_id, trial=number))
    workerq.notify(conn, workerq.JOBS_CHANNEL, table)
    return ids[0], number


def intermediate_values(conn: Connection, job_ids: Sequence[int],
                        key: str) -> dict[int, dict[int, float]]:
    """Each job's reported values of ``key`` by step; for a step reported by several
    attempts, the latest attempt's value."""
    out: dict[int, dict[int, float]] = {i: {} for i in job_ids}
    if not job_ids:
        return out
    rows = conn.execute(
        sa.select(metrics.c.job_id, metrics.c.step, metrics.c.value)
        .where(metrics.c.job_id.in_(list(job_ids)), metrics.c.key == key,
               metrics.c.value.is_not(None))
        .order_by(metrics.c.job_id, metrics.c.attempt, metrics.c.step))
    for job_id, step, value in rows:
        out[job_id][int(step)] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# The driver's lock: one driver acts on a search at a time.


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a search name."""
    digest = hashlib.blake2b(f"dbdict-search:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SearchLock:
    """Held for the driver's life. PostgreSQL: ``pg_advisory_lock`` on a connection of its
    own (the server releases it when the process dies). SQLite: ``flock`` on a file beside
    the database (the kernel releases it likewise)."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._conn: Connection | None = None
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; whether it is held now."""
        if self.engine.dialect.name == "sqlite":
            if self._fd is None:
                self._fd = os.open(self.lock_path(), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
        if self._conn is None:
            self._conn = self.engine.connect()
        got = self._conn.execute(sa.select(sa.func.pg_try_advisory_lock(lock_key(self.name))))
        ok = bool(got.scalar_one())
        self._conn.commit()  # the session-level lock outlives the transaction
        return ok

    def acquire(self, *, poll: float = 0.5, on_wait: Any = None) -> None:
        """Wait for the lock (polling, so that Ctrl-C stops the wait at once)."""
        told = False
        while not self.try_acquire():
            if on_wait is not None and not told:
                on_wait()
                told = True
            time.sleep(poll)

    def check(self) -> bool:
        """Whether the lock's connection still lives (if it dropped, the server released
        the lock and another driver may act: this one must stop)."""
        if self._conn is None:
            return True
        try:
            held = self._conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid()")).scalar_one()
            self._conn.commit()
            return bool(held)
        except sa.exc.DBAPIError:
            return False

    def lock_path(self) -> str:
        db = self.engine.url.database or "dbdict.sqlite"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)[:100]
        return f"{db}.search-{safe}-{lock_key(self.name) & 0xffffffff:08x}.lock"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            # The pool would keep the session (and its lock) open: unlock, then drop the
            # connection for good.
            try:
                self._conn.execute(sa.select(sa.func.pg_advisory_unlock(lock_key(self.name))))
                self._conn.commit()
            except sa.exc.DBAPIError:
                pass
            self._conn.invalidate()
            self._conn.close()
            self._conn = None
