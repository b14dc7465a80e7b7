"""The supervisor's database writes: whether the database answers, and the saves and final
statuses waiting for it.

:class:`Outage` is the one place that tracks the database's health. The store's retrier
reports to it (a call's first transient failure, every success), and the supervisor makes its
calls through :meth:`Outage.call`: a call that gives up after its retries starts an outage,
during which calls are skipped until a backoff has passed (0.5 s, doubling up to 10 s, or
less: a worker passes a third of its lease, so that it renews its jobs' leases in time once
the database is back); the first call that succeeds ends it. Each start and end is reported
once.

:class:`Writes` keeps the newest save of each running job and every final status until they
are written. While the database is away the children keep running and nothing is lost; a
write that fencing refuses (the job was taken away) stops that job and writes nothing more.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, TypeVar

from dbdict_worker.backoff import doubling
from dbdict_worker.constants import RESTART_PRIORITY, Status
from dbdict_worker.errors import DatabaseUnavailable, LostOwnership
from dbdict_worker.job.jobrun import RunResult
from dbdict_worker import state as statemod
from dbdict_worker.store import Booking, Completion, Token
from dbdict_worker.storequeue import user_state
from dbdict_worker.worker.events import (Milestone, OutageEnded, OutageStarted, TakenAway,
                                         Written)
from dbdict_worker.worker.ports import QueueStore, RunsJob
from dbdict_worker.worker.restarts import Restart

log = logging.getLogger("dbdict_worker.worker")

T = TypeVar("T")

#: How long each database call of a running worker retries before the worker treats the
#: database as away and goes on without it (seconds).
CALL_RETRY_SECONDS = 2.0
#: How long a stopping worker waits for an unreachable database to take its last results,
#: once in its loop and once more on its way out (seconds).
FINAL_WAIT_SECONDS = 30.0
#: Backoff between calls during an outage: first, and at most (seconds).
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 10.0


class Outage:
    """Whether the database answers; see the module docstring. ``on_change`` receives
    :class:`OutageStarted` and :class:`OutageEnded`, once each per outage. Used from the
    thread that makes the calls (the supervisor's loop) only."""

    def __init__(self, on_change: Callable[[Milestone], None] = lambda m: None, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_backoff: float = MAX_BACKOFF) -> None:
        self.clock = clock
        self.on_change = on_change
        self.max_backoff = max_backoff
        #: clock() when the current outage started (a call gave up); None while healthy.
        self.down_since: float | None = None
        #: clock() since when no call has failed; None: none ever has.
        self.healthy_since: float | None = None
        self.retry_at = 0.0
        self._gave_up_times = 0  # calls given up in the current outage
        self._failing = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def down_for(self) -> float:
        """Seconds since the current outage started (0 when there is none)."""
        return self.clock() - self.down_since if self.down_since is not None else 0.0

    def healthy_for(self, seconds: float) -> bool:
        """Whether the database has answered without a failure for ``seconds``, or without
        any failure since this tracker was made."""
        if self.down_since is not None:
            return False
        return self.healthy_since is None or self.clock() - self.healthy_since >= seconds

    def retry_now(self) -> None:
        """Let the next call through even within the backoff."""
        self.retry_at = 0.0

    # The store's retrier reports here (connect.OutageWatcher).

    def failed(self, why: str, retrying_for: float) -> None:
        self._failing = True

    def succeeded(self) -> None:
        if not self._failing and self.down_since is None:
            return
        now = self.clock()
        down_since, self.down_since = self.down_since, None
        self._failing = False
        self.healthy_since = now
        if down_since is not None:
            self.on_change(OutageEnded(now - down_since))

    # The supervisor's calls go through here.

    def call(self, fn: Callable[[], T]) -> T | None:
        """``fn()``; None when it gave up (an outage starts or goes on) or when the outage's
        backoff has not passed yet (then ``fn`` is not called)."""
        if self.down_since is not None and self.clock() < self.retry_at:
            return None
        try:
            result = fn()
        except DatabaseUnavailable as e:
            self._gave_up(str(e))
            return None
        self.succeeded()
        return result

    def _gave_up(self, reason: str) -> None:
        now = self.clock()
        self._failing = True
        if self.down_since is None:
            self.down_since = now
            self._gave_up_times = 0
            self.on_change(OutageStarted(reason))
        self._gave_up_times += 1
        self.retry_at = now + doubling(self._gave_up_times, FIRST_BACKOFF, self.max_backoff)


@dataclasses.dataclass
class PendingSave:
    """The newest save of a running job, not written yet."""

    booking: Booking
    run: RunsJob
    state: dict[str, Any]


@dataclasses.dataclass
class Final:
    """A final status waiting to be written; for START, ``restart`` says how it is requeued."""

    booking: Booking
    result: RunResult
    record_workdir: str | None  # None: the job never had a workdir
    seconds: float
    restart: Restart = dataclasses.field(default_factory=Restart)


class Writes:
    """Saves and final statuses waiting to be written; see the module docstring.
    ``on_event`` receives :class:`Written` and :class:`TakenAway`."""

    def __init__(self, store: QueueStore, outage: Outage,
                 on_event: Callable[[Milestone], None] = lambda m: None) -> None:
        self.store = store
        self.outage = outage
        self.on_event = on_event
        self.saves: dict[int, PendingSave] = {}
        self.finals: dict[int, Final] = {}
        self._saved: set[int] = set()  # jobs with a save written during this attempt

    @property
    def pending(self) -> bool:
        return bool(self.saves or self.finals)

    def save(self, booking: Booking, run: RunsJob, state: dict[str, Any]) -> None:
        """Keep ``state`` as the job's newest save (only the newest one matters)."""
        self.saves[booking.job.id] = PendingSave(booking, run, state)

    def forget_save(self, job_id: int) -> None:
        """The job has ended: its final status carries its last state."""
        self.saves.pop(job_id, None)

    def add_final(self, final: Final) -> None:
        self.finals[final.booking.job.id] = final

    def tokens(self) -> list[Token]:
        """The tokens of the jobs whose final status is waiting (they are still ours)."""
        return [f.booking.token for f in self.finals.values()]

    def drop_unowned(self, owned: set[int]) -> None:
        """Forget the final statuses of jobs taken away while they waited."""
        for job_id in [j for j in self.finals if j not in owned]:
            log.warning("job %d was taken away before its result was written: dropped", job_id)
            del self.finals[job_id]
            self.on_event(TakenAway(job_id))

    def flush(self) -> None:
        """Write what is waiting, final statuses first (the ends of all jobs that ended
        since the last flush in one commit, then the requeues); stop at the first write
        that cannot be made."""
        ends = [f for f in self.finals.values() if f.result.outcome.status != Status.START]
        if ends:
            if self.outage.call(lambda: self._write_ends(ends)) is None:
                return
            for final in ends:
                del self.finals[final.booking.job.id]
        for job_id in list(self.finals):
            if self.outage.call(lambda f=self.finals[job_id]: self._write_final(f)) is None:
                return
            del self.finals[job_id]
        for job_id in list(self.saves):
            pending = self.saves[job_id]
            if pending.run.abandoned:
                del self.saves[job_id]
                continue
            if self.outage.call(lambda p=pending: self._write_save(p)) is None:
                return
            del self.saves[job_id]

    def last_chance(self, seconds: float, pause: float = 1.0) -> int:
        """On the way out: try the final statuses for up to ``seconds`` more; returns how many
        are still unwritten."""
        deadline = self.outage.clock() + seconds
        while self.finals and self.outage.clock() < deadline:
            self.outage.retry_now()
            self.flush()
            if self.finals:
                time.sleep(pause)  # the database is away: give it a little longer
        return len(self.finals)

    def _write_save(self, pending: PendingSave) -> bool:
        # Counted before the call: a save whose commit went unanswered may have been made.
        self._saved.add(pending.booking.job.id)
        try:
            self.store.save_state(pending.booking.token, pending.state)
        except LostOwnership:
            job_id = pending.booking.job.id
            log.warning("job %d was taken away (save refused): stopping it", job_id)
            pending.run.abandon()
            self.on_event(TakenAway(job_id))
        return True

    def _write_ends(self, ends: list[Final]) -> bool:
        """The final statuses of jobs that ended (not requeued), in one commit."""
        written = set(self.store.finish_many([
            Completion(f.booking.token, f.result.outcome.status, self._changed_state(f),
                       f.result.outcome.error, f.record_workdir) for f in ends]))
        for final in ends:
            job_id, outcome = final.booking.job.id, final.result.outcome
            self._saved.discard(job_id)
            if job_id not in written:
                self._taken_away(job_id, outcome.status)
                continue
            log.info("job %d %s after %.1fs%s", job_id, outcome.status.name, final.seconds,
                     f": {outcome.error}" if outcome.error else "")
            self.on_event(Written(job_id, outcome.status))
        return True

    def _changed_state(self, final: Final) -> dict[str, Any] | None:
        """The job's final state, or None when the database holds it already: nothing was
        saved during the run and it is the state the job was booked with (rewriting a
        state is most of the cost of a short job's final write)."""
        flat = final.result.outcome.state
        job_id = final.booking.job.id
        if flat is None or job_id in self._saved:
            return flat
        return None if statemod.same_state(user_state(flat), final.booking.state) else flat

    def _write_final(self, final: Final) -> bool:
        """A requeue (INCOMPLETE, stopped, retried): back to START."""
        job = final.booking.job
        outcome = final.result.outcome
        restart = final.restart
        reason = restart.reason or outcome.error
        self._saved.discard(job.id)
        try:
            self.store.requeue_job(final.booking.token, priority=RESTART_PRIORITY,
                                   state=outcome.state, reason=reason or "incomplete",
                                   workdir=final.record_workdir, delay=restart.delay,
                                   restarts=restart.restarts, retried=restart.retried,
                                   event=restart.event)
        except LostOwnership:
            self._taken_away(job.id, outcome.status)
            return True
        log.info("job %d requeued at priority %g after %.1fs (%s)%s", job.id,
                 RESTART_PRIORITY, final.seconds, reason or "INCOMPLETE",
                 f", bookable in {restart.delay:.3g}s" if restart.delay > 0 else "")
        self.on_event(Written(job.id, outcome.status))
        return True

    def _taken_away(self, job_id: int, status: Status) -> None:
        self._saved.discard(job_id)
        log.warning("job %d was taken away before its %s was written: dropped", job_id,
                    status.name)
        self.on_event(TakenAway(job_id))
