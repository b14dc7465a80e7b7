"""At most one running copy of a job: a worker's job runs only while its lease is renewed.

Another worker may rescue a job once its heartbeat is older than the lease
(:mod:`~dbdict_worker.worker.rescue`). So each job runs only until a deadline a margin short of
the lease, counted from the moment before the last heartbeat that renewed it was sent (or
before the booking): each renewal moves the deadline and is sent to the job's child, whose
watchdog (:mod:`dbdict_worker.job.watchdog`) stops the job's process group when it passes,
even if this worker is frozen. The supervisor pauses an overdue job itself too, resumes it when
a renewal finds the job still its own, and kills it (the taken-away path) when not.

Deadlines are on ``time.monotonic()`` (CLOCK_MONOTONIC, which the children share), whatever
clock the supervisor's timers run on.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Protocol

from dbdict_worker.job.process import JobProcess
from dbdict_worker.worker.ports import RunsJob

log = logging.getLogger("dbdict_worker.worker")


def pause_margin(lease: float, heartbeat: float) -> float:
    """How long before the lease ends a job that could not renew it is paused: a heartbeat
    (or a quarter of the lease, if longer), but never so much that a healthy job pauses
    between two heartbeats."""
    return min(max(heartbeat, lease / 4), (lease - heartbeat) / 2)


class LeasedSlot(Protocol):
    """What this module needs of a supervisor's slot."""

    run: RunsJob
    renewed_until: float
    paused: bool


def job_process(run: RunsJob) -> JobProcess | None:
    """The child of a job run, once started (a test's stand-in run has none)."""
    return getattr(run, "process", None)


class Leases:
    """The renewal deadlines of one worker's jobs."""

    def __init__(self, lease: float, heartbeat: float) -> None:
        self.margin = pause_margin(lease, heartbeat)
        self.lease = lease

    @staticmethod
    def now() -> float:
        """The clock the deadlines are on: take it just before the statement that renews."""
        return time.monotonic()

    def until(self, sent: float) -> float:
        """The deadline of a lease renewed by a statement sent at ``sent``."""
        return sent + self.lease - self.margin

    def renewed(self, job_id: int, slot: LeasedSlot, sent: float) -> None:
        """A heartbeat sent at ``sent`` found the job still ours: move its deadline, tell its
        child, resume it if it was paused."""
        slot.renewed_until = self.until(sent)
        if slot.renewed_until <= self.now():
            return  # the answer came too late to run on: paused until the next renewal
        proc = job_process(slot.run)
        if proc is not None and proc.renew(slot.renewed_until):
            log.warning("job %d resumed: its lease is renewed", job_id)
        slot.paused = False

    def pause_overdue(self, slots: Iterable[tuple[int, LeasedSlot]]) -> None:
        """Pause the jobs whose deadline has passed (their child's watchdog does it too; this
        does not wait for it)."""
        now = self.now()
        for job_id, slot in slots:
            if slot.paused or slot.run.abandoned or now < slot.renewed_until:
                continue
            proc = job_process(slot.run)
            if proc is not None and proc.pause():
                slot.paused = True
                log.warning("job %d paused: its lease could not be renewed for %.1fs",
                            job_id, now - slot.renewed_until + self.lease - self.margin)
