"""Waiting for jobs to end: the library behind ``dbdict wait``.

>>> result = store.wait(tables="sweep1", timeout=3600)   # doctest: +SKIP
>>> result.ok, result.counts                              # doctest: +SKIP

One count of the selected jobs by status every ``interval`` seconds (the cost of
``dbdict status``), until none is START or RUNNING, or ``timeout`` passes.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dbdict_worker.constants import PENDING, SUCCEEDED, Status
from dbdict_worker.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from dbdict_worker.store import Store

log = logging.getLogger("dbdict_worker")

#: Seconds between two counts.
POLL_SECONDS = 2.0
#: The ETA follows the rate at which jobs ended over this many seconds.
RATE_WINDOW = 600.0


@dataclass(frozen=True)
class WaitResult:
    """How the selected jobs stood when the wait ended: their number per status, and
    whether it gave up (``timed_out``) with some still pending."""

    counts: Mapping[Status, int]
    timed_out: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        """Jobs START or RUNNING."""
        return sum(self.counts.get(s, 0) for s in PENDING)

    @property
    def failed(self) -> int:
        """Jobs that ended otherwise than DONE or PRUNED (ERR_* or CANCELED)."""
        return self.total - self.pending - sum(self.counts.get(s, 0) for s in SUCCEEDED)

    @property
    def ok(self) -> bool:
        """Every selected job ended DONE or PRUNED (True for an empty selection)."""
        return not self.timed_out and self.pending == 0 and self.failed == 0

    def describe(self) -> str:
        """The counts by status, in the statuses' order: ``38 DONE, 1 ERR_RUN, 1 CANCELED``."""
        order = [Status.DONE, *sorted(set(Status) - {Status.DONE})]
        return ", ".join(f"{self.counts[s]} {s.name}" for s in order if self.counts.get(s))


@dataclass(frozen=True)
class Progress:
    """One look at the selected jobs while waiting: their counts, the seconds waited and
    the estimated seconds left (None until jobs have been seen ending)."""

    result: WaitResult
    elapsed: float
    eta: float | None


class _Rate:
    """The rate at which jobs end, over the last :data:`RATE_WINDOW` seconds."""

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def eta(self, now: float, ended: int, pending: int) -> float | None:
        self.samples.append((now, ended))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        t0, ended0 = self.samples[0]
        if now <= t0 or ended <= ended0:
            return None
        return pending * (now - t0) / (ended - ended0)


def wait(store: "Store", *, timeout: float | None = None, interval: float = POLL_SECONDS,
         on_progress: Callable[[Progress], None] | None = None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep, **select: Any) -> WaitResult:
    """Block until no job of the selection (``Store.selection`` arguments: ``tables``,
    ``ids``, ``statuses``, ``where``) is START or RUNNING, or ``timeout`` seconds have
    passed; returns the last counts. ``on_progress`` gets each look.

    Once the first count has succeeded, an unreachable database does not end the wait: it
    goes on counting (and the timeout on running) until the database is back."""
    start = clock()
    rate = _Rate()
    seen = False
    counts: dict[Status, int] = {}
    while True:
        try:
            by_table = store.counts(**select)
        except DatabaseUnavailable as exc:
            if not seen:
                raise
            log.warning("wait: cannot count the jobs (%s); trying again", exc)
        else:
            seen = True
            counts = {}
            for (_, status), n in by_table.items():
                counts[status] = counts.get(status, 0) + n
        now = clock()
        result = WaitResult(counts)
        if on_progress is not None and seen:
            ended = result.total - result.pending
            on_progress(Progress(result, now - start, rate.eta(now, ended, result.pending)))
        if seen and result.pending == 0:
            return result
        if timeout is not None and now - start >= timeout:
            return WaitResult(counts, timed_out=True)
        left = interval if timeout is None else min(interval, start + timeout - now)
        sleep(max(0.0, left))
