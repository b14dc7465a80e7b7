"""What the database hands back: the frozen result types, and how a row becomes one.

Every query function returns plain values or one of these; callers never see a database row.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from dbdict_worker.constants import DEFAULT_MAX_RESTARTS, Status
from dbdict_worker.db.schema import job_tables, jobs


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
    #: INCOMPLETE returns in a row without new progress, and how many are allowed.
    restarts: int = 0
    max_restarts: int = DEFAULT_MAX_RESTARTS
    #: A waiting job is not booked before this time (None: ready now).
    not_before: dt.datetime | None = None
    #: Retries of failed attempts: how many, how many used, of which failure classes
    #: (comma separated; None: none but losses), the first delay in seconds (None: default).
    retries: int = 0
    retried: int = 0
    retry_on: str | None = None
    retry_delay: float | None = None
    #: Limits of one attempt in seconds (None: none): wall time, time without a sign of life.
    timeout: float | None = None
    stall_after: float | None = None
    #: Provenance: the enqueue's ``submissions`` row, the latest attempt's facts (JSON text).
    submission_id: int | None = None
    run_info: str | None = None
    #: Search: the search whose trial this is, the trial's number, and whether its pruner
    #: asked the job to stop early.
    search_id: int | None = None
    trial: int | None = None
    prune_requested: bool = False
    #: That ``submissions`` row, where a reader attached it (db/provenance.py); not a column.
    submission: Submission | None = None


@dataclass(frozen=True)
class Submission:
    """One row of ``submissions``: who enqueued jobs, how, from which version of the code."""

    id: int
    created_at: dt.datetime | None
    user: str | None
    host: str | None
    command: str | None
    cwd: str | None
    git_repo: str | None
    git_commit: str | None
    git_dirty: bool | None
    git_diff_hash: str | None


@dataclass(frozen=True)
class Token:
    """Proof of ownership of a booked job: the worker and the attempt number it booked."""

    job_id: int
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class Completion:
    """A booked job's end, to be written with others in one transaction: its token, final
    status and, when given, its final state, error text and recorded workdir."""

    token: Token
    status: Status
    state: Optional[Mapping[str, Any]] = None
    error: Optional[str] = None
    workdir: Optional[str] = None


@dataclass(frozen=True)
class Booking:
    """A job booked by a worker: the row, the fencing token and the job's flat state."""

    job: Job
    token: Token
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnqueueResult:
    """What an enqueue did: the ids created (in input order) and the duplicates skipped."""

    created: list[int]
    skipped: int


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


@dataclass(frozen=True)
class Rescued:
    """A job whose owner stopped heartbeating, and what became of it."""

    job_id: int
    worker_id: str | None
    status: Status


@dataclass(frozen=True)
class WorkerRow:
    """A worker as ``dbdict-worker status`` shows it."""

    id: str
    host: str
    pid: int
    slots: int
    tables: str | None
    state: str
    drain_requested: bool
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    stopped_at: dt.datetime | None
    heartbeat_age: float | None
    job_ids: tuple[int, ...]


#: In :func:`~dbdict_worker.db.queries.count_by_key`, the value of jobs without the key.
MISSING = object()

#: The columns a :class:`Job` is read from, in its fields' order.
JOB_COLUMNS = (
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
    jobs.c.restarts,
    jobs.c.max_restarts,
    jobs.c.not_before,
    jobs.c.retries,
    jobs.c.retried,
    jobs.c.retry_on,
    jobs.c.retry_delay,
    jobs.c.timeout,
    jobs.c.stall_after,
    jobs.c.submission_id,
    jobs.c.run_info,
    jobs.c.search_id,
    jobs.c.trial,
    jobs.c.prune_requested,
)


@dataclass(frozen=True)
class MetricRow:
    """One reported metric: ``channel.report(step, key=value)`` of an attempt of a job;
    ``at`` is when it was written (database clock; None before)."""

    job_id: int
    attempt: int
    step: int
    key: str
    value: float | None
    at: dt.datetime | None = None


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time read from the database, as an aware UTC datetime (SQLite gives naive ones: they
    are UTC, the database clock)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def job_from_row(row: Sequence[Any]) -> Job:
    """A :class:`Job` from a row of :data:`JOB_COLUMNS`."""
    r = list(row)
    r[3] = Status(r[3])
    for i in (*range(9, 14), 20):
        r[i] = utc(r[i])
    r[len(JOB_COLUMNS) - 1] = bool(r[len(JOB_COLUMNS) - 1])  # prune_requested; SQLite: 0/1
    return Job(*r)
