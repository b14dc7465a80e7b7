"""The worker's side of ``channel.report``: write the metrics its jobs report to the database
(the ``metrics`` table) in batches.

Each job's child coalesces its reports and sends them over its pipe at most once a second
(``DBDICT_REPORT_INTERVAL``); its :class:`~dbdict_worker.job.process.JobProcess` keeps them.
The supervisor tells :class:`MetricShip` when a slot starts (:meth:`MetricShip.track`), calls
:meth:`MetricShip.flush` on each turn of its loop and :meth:`MetricShip.finish` when a job's
process has ended, before its final status is written. A flush takes the reports of every
slot and writes them all in one statement, at most once per ``interval`` (2 s, or
``DBDICT_METRICS_INTERVAL``): a hundred jobs reporting every 10 ms cost one statement every
2 s per worker. A job's end
writes what is pending at once, so a reader who sees the job ended finds its whole curve.

Every write goes through the supervisor's :class:`~dbdict_worker.worker.writes.Outage`:
while the database is away nothing blocks; the rows are kept (at most :data:`MAX_PENDING`,
the oldest dropped with a warning) and written once it is back.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from dbdict_worker.db.models import MetricRow
from dbdict_worker.durations import seconds_from_env
from dbdict_worker.worker.ports import QueueStore
from dbdict_worker.worker.writes import Outage

log = logging.getLogger("dbdict_worker.worker")

#: Seconds between two batches (and DBDICT_METRICS_INTERVAL's default).
DEFAULT_INTERVAL = 2.0
INTERVAL_ENV = "DBDICT_METRICS_INTERVAL"
#: Rows kept waiting for the database at most (the oldest go first).
MAX_PENDING = 500_000


def interval_from_env(default: float = DEFAULT_INTERVAL) -> float:
    """``DBDICT_METRICS_INTERVAL`` seconds (>= 0), or ``default`` when unset or malformed."""
    return seconds_from_env(INTERVAL_ENV, default)


class MetricShip:
    """See the module docstring. Used from the supervisor's thread only."""

    def __init__(self, store: QueueStore, outage: Outage, interval: float = DEFAULT_INTERVAL,
                 *, clock: Callable[[], float] = time.monotonic,
                 max_pending: int = MAX_PENDING) -> None:
        self.store = store
        self.outage = outage
        self.interval = interval
        self.clock = clock
        self.max_pending = max_pending
        self._runs: dict[int, tuple[int, Any]] = {}  # job id -> (attempt, run)
        self._pending: list[MetricRow] = []
        self._next = 0.0
        self.dropped = 0
        #: Statements sent and rows written (for the figures and the tests).
        self.statements = self.rows = 0

    @property
    def pending(self) -> int:
        """Rows waiting for the database."""
        return len(self._pending)

    def track(self, job_id: int, attempt: int, run: Any) -> None:
        """Take the reports of a booked job's run (its ``take_metrics()``, if it has one)."""
        if callable(getattr(run, "take_metrics", None)):
            self._runs[job_id] = (attempt, run)

    def flush(self, *, force: bool = False) -> None:
        """Take every slot's reports and write all that is pending in one statement; at most
        once per interval unless ``force``."""
        now = self.clock()
        if not force and now < self._next:
            return
        self._next = now + self.interval
        for job_id in list(self._runs):
            self._take(job_id)
        self._write()

    def finish(self, job_id: int) -> None:
        """The job's process has ended: take its last reports and write what is pending now
        (before its final status); kept for later if the database is away."""
        if job_id in self._runs:
            self._take(job_id)
            del self._runs[job_id]
            self._write()

    def _take(self, job_id: int) -> None:
        attempt, run = self._runs[job_id]
        rows = run.take_metrics()
        if not rows:
            return
        self._pending += [MetricRow(job_id, attempt, step, key, value)
                          for step, key, value in rows]
        over = len(self._pending) - self.max_pending
        if over > 0:
            del self._pending[:over]
            self.dropped += over
            log.warning("dropped the %d oldest reported metric(s) (%d kept): the database has "
                        "been away too long", over, self.max_pending)

    def _write(self) -> None:
        if not self._pending:
            return
        rows = self._pending
        try:
            written = self.outage.call(lambda: self.store.put_metrics(rows))
        except Exception as e:  # metrics are a convenience: a failure must not stop the worker
            log.warning("could not store %d reported metric(s): %s: %s", len(rows),
                        type(e).__name__, e)
            written = 0
        if written is None:
            return  # the database is away: kept, written later
        self.statements += 1
        self.rows += written
        self._pending = []
