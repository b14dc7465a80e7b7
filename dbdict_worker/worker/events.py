"""What moves inside the worker daemon, as small frozen dataclasses.

*Messages* go to the supervisor's loop through its queue: the slot threads report a job's saves
and its end, the LISTEN thread reports notifications. The loop handles them in its own thread,
which is the only one that writes to the database.

*Milestones* are what the loop tells an observer (``Supervisor(observer=...)``): a test waits
on them instead of sleeping, a monitor can count them. The observer is called in the loop's
thread; it must return quickly and not raise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

from dbdict_worker.constants import Status
from dbdict_worker.job.jobrun import RunResult


@dataclass(frozen=True)
class AboutJob:
    """A message or milestone about one job."""

    job_id: int


# ------------------------------------------------------------------------------------------
# Messages to the loop


@dataclass(frozen=True)
class Saved(AboutJob):
    """A job's child saved this state (only the newest one per job is written)."""

    state: dict[str, Any]


@dataclass(frozen=True)
class Finished(AboutJob):
    """A job's run ended (its child has exited, its workdir is pushed or kept)."""

    result: RunResult


@dataclass(frozen=True)
class JobsReady:
    """Jobs may be ready: a notification on the jobs channel, or the listener reconnected."""


@dataclass(frozen=True)
class ControlSent:
    """A notification on the control channel: a drain may be asked, read the worker's row."""


Message = Union[Saved, Finished, JobsReady, ControlSent]

# ------------------------------------------------------------------------------------------
# Milestones for an observer


@dataclass(frozen=True)
class Booked(AboutJob):
    """A job was booked and its run started in a slot."""

    attempt: int


@dataclass(frozen=True)
class Ended(AboutJob):
    """A job's run ended with this status (its result is not written yet)."""

    status: Status


@dataclass(frozen=True)
class Written(AboutJob):
    """A job's final status is in the database (START: requeued)."""

    status: Status


@dataclass(frozen=True)
class TakenAway(AboutJob):
    """A job is no longer this worker's (cancelled, or requeued and booked elsewhere): its run
    is killed and nothing more of it is written."""


@dataclass(frozen=True)
class OutageStarted:
    """A database call gave up; the worker goes on without the database."""

    reason: str


@dataclass(frozen=True)
class OutageEnded:
    """The database answered again after an outage of this many seconds."""

    seconds: float


@dataclass(frozen=True)
class Stopping:
    """A stop request was acted on: the first gives the jobs the grace, a later one
    (``kill``) kills them."""

    kill: bool


@dataclass(frozen=True)
class Draining:
    """The worker books no more and leaves once its jobs have ended."""


@dataclass(frozen=True)
class Exited:
    """The loop has ended; ``unwritten`` results were still waiting for the database."""

    booked: int
    unwritten: int


Milestone = Union[Booked, Ended, Written, TakenAway, OutageStarted, OutageEnded, Stopping,
                  Draining, Exited]
Observer = Callable[[Milestone], None]
