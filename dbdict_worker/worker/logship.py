"""The worker's side of ``dbdict logs``: ship the tail of each running job's output to the
database (the ``job_logs`` table), live and at the end.

The supervisor tells :class:`LogShip` when a slot starts (:meth:`LogShip.track`), calls
:meth:`LogShip.flush` on each heartbeat, and :meth:`LogShip.finish` when a job's process has
ended, before its local workdir is removed. A flush is rate-limited (at most once per
heartbeat, and never more often than :data:`MIN_INTERVAL`), looks only at jobs whose output
grew (a ``stat`` each), and writes all of them in one upsert statement, so fifty busy jobs
cost one statement every heartbeat, not fifty. The final tail is written at once, before the
job's status, so that a reader who sees the job ended finds its whole tail.

Every write goes through the supervisor's :class:`~dbdict_worker.worker.writes.Outage`: while
the database is away nothing blocks and nothing is raised; live tails are simply sent again
later, final tails are kept and retried for :data:`KEEP_FINALS_SECONDS`, and a job's status
never waits for its logs.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

from dbdict_worker.db.logs import LogTail
from dbdict_worker.job.logtail import STREAMS, output_size, read_tail
from dbdict_worker.worker.ports import QueueStore
from dbdict_worker.worker.writes import Outage

log = logging.getLogger("dbdict_worker.worker")

#: The shortest time between two live flushes (seconds), whatever the heartbeat: a job whose
#: two streams both grow then costs at most 2 rows per 5 s, under one row per second even
#: counted with the 2 rows of its end.
MIN_INTERVAL = 5.0
#: How long final tails that could not be written are kept and retried (seconds).
KEEP_FINALS_SECONDS = 600.0
#: At most this many final tails are kept waiting (the oldest go first).
KEEP_FINALS = 2000


@dataclasses.dataclass
class _Watched:
    """A running job's attempt, its run, and the size shipped so far per stream."""

    attempt: int
    run: Any
    shipped: dict[str, int] = dataclasses.field(default_factory=dict)


def _outputs(run: Any) -> list[tuple[str, Path, int]]:
    """(stream, file, this attempt's offset) of a run whose process has started, else []."""
    proc = getattr(run, "process", None)  # a test's fake run may have none
    offsets = getattr(proc, "output_offsets", None)
    workdir = getattr(proc, "workdir", None)
    if not offsets or workdir is None:
        return []
    return [(s, Path(getattr(workdir, s)), offsets[s]) for s in STREAMS]


class LogShip:
    """See the module docstring. ``limit``: bytes kept per stream (0: capture off);
    ``interval``: the heartbeat. Used from the supervisor's thread only."""

    def __init__(self, store: QueueStore, outage: Outage, limit: int, interval: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.outage = outage
        self.limit = limit
        self.interval = max(interval, MIN_INTERVAL)
        self.clock = clock
        self._jobs: dict[int, _Watched] = {}
        #: Final tails not written yet, with the clock() until which they are retried.
        self._finals: dict[tuple[int, int, str], tuple[LogTail, float]] = {}
        self._next = 0.0

    @property
    def pending(self) -> int:
        """Final tails waiting for the database."""
        return len(self._finals)

    def track(self, job_id: int, attempt: int, run: Any) -> None:
        """Follow a booked job's output (read from ``run.process`` once it has started)."""
        if self.limit > 0:
            self._jobs[job_id] = _Watched(attempt, run)

    def flush(self) -> None:
        """Ship the tails of the jobs whose output grew since the last flush (and the final
        tails still waiting), in one statement; at most once per interval."""
        now = self.clock()
        if self.limit <= 0 or now < self._next:
            return
        self._next = now + self.interval
        rows: list[LogTail] = []
        for job_id, watched in self._jobs.items():
            for stream, path, start in _outputs(watched.run):
                shipped = watched.shipped.get(stream, 0)
                if output_size(path, start) <= shipped:
                    continue
                tail = read_tail(path, start, self.limit, final=False)
                if tail.size > shipped:
                    rows.append(LogTail(job_id, watched.attempt, stream, tail.text, tail.size))
        self._expire(now)
        rows += [row for row, _ in self._finals.values()]
        if rows and self._write(rows):
            self._finals.clear()
            for row in rows:
                watched = self._jobs.get(row.job_id)
                if watched is not None and watched.attempt == row.attempt:
                    watched.shipped[row.stream] = row.size

    def finish(self, job_id: int) -> None:
        """The job's process has ended: read its final tails now (its workdir may go next)
        and write them at once; kept for later if the database is away."""
        watched = self._jobs.pop(job_id, None)
        if watched is None:
            return
        rows = []
        for stream, path, start in _outputs(watched.run):
            tail = read_tail(path, start, self.limit, final=True)
            if tail.size > 0 and tail.size != watched.shipped.get(stream, 0):
                rows.append(LogTail(job_id, watched.attempt, stream, tail.text, tail.size))
        if not rows or self._write(rows):
            return
        until = self.clock() + KEEP_FINALS_SECONDS
        for row in rows:
            self._finals[(row.job_id, row.attempt, row.stream)] = (row, until)
        while len(self._finals) > KEEP_FINALS:
            del self._finals[next(iter(self._finals))]

    def _expire(self, now: float) -> None:
        old = [key for key, (_, until) in self._finals.items() if until <= now]
        for key in old:
            del self._finals[key]
        if old:
            log.warning("dropped the final output tails of %d job stream(s): the database was "
                        "away for %.0fs (the full output is in their workdirs)", len(old),
                        KEEP_FINALS_SECONDS)

    def _write(self, rows: list[LogTail]) -> bool:
        """One upsert through the outage tracker; True once the rows need no retry."""
        try:
            return self.outage.call(lambda: self.store.put_log_tails(rows)) is not None
        except Exception as e:  # logs are a convenience: a failure must not stop the worker
            log.warning("could not store %d output tail(s): %s: %s", len(rows),
                        type(e).__name__, e)
            return True
