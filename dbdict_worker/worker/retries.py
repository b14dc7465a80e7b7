"""What a worker does with an attempt that ended: restarts (:mod:`.restarts`), then retries
(:mod:`dbdict_worker.retrying`).

An attempt that failed in a class its job's ``retry_on`` lists, with retries left, goes back
to START after the retry delay (``jobs.not_before``), its ``retried`` count one higher and a
``retry`` event saying how the attempt ended; otherwise its status and error stand. The class
of an outcome (:func:`failure_class`):

- ERR_RUN with a time limit hit (``Outcome.limit``): ``timeout``;
- ERR_RUN otherwise: ``error``, except the ERR_RUN that :mod:`.restarts` makes of too many
  INCOMPLETE returns without progress (bounded by ``max_restarts``, not retried);
- ERR_SYNC: ``sync``;
- anything else (DONE, START, ERR_START): none.

Losses (``lost``) are decided where they are found, in the queue's lease rescue.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

from dbdict_worker import retrying
from dbdict_worker.constants import Status
from dbdict_worker.job.process import Outcome
from dbdict_worker.store import Booking
from dbdict_worker.worker import restarts
from dbdict_worker.worker.restarts import Restart

#: The kind of the event a retry writes into the job's history.
RETRY_EVENT = "retry"


def failure_class(outcome: Outcome) -> str | None:
    """The retry class of an attempt's outcome as the job's run reported it; see the module
    docstring."""
    if outcome.status == Status.ERR_RUN:
        return "timeout" if outcome.limit is not None else "error"
    if outcome.status == Status.ERR_SYNC:
        return "sync"
    return None


def after_run(booking: Booking, outcome: Outcome, restart_base: float,
              rand: Callable[[], float] = random.random) -> tuple[Outcome, Restart]:
    """The outcome to write and, for START, how the job is requeued: restarts first
    (:func:`.restarts.after_run`), then a retry for a failure of a listed class."""
    failure = failure_class(outcome)  # before restarts: its own ERR_RUN is not retried
    outcome, restart = restarts.after_run(booking, outcome, restart_base)
    if failure is None:
        return outcome, restart
    job = booking.job
    retry = retrying.next_retry(failure, retries=job.retries, retried=job.retried,
                                retry_on=job.retry_on, retry_delay_base=job.retry_delay,
                                rand=rand)
    if retry is None:
        return outcome, restart
    ended = f"{outcome.status.name}: {outcome.error}" if outcome.error else outcome.status.name
    reason = (f"attempt {booking.token.attempt} ended {ended}; retry {retry.n} of {retry.of} "
              f"(on {failure})")
    requeued = dataclasses.replace(outcome, status=Status.START, error=None)
    return requeued, Restart(retry.delay, None, reason, retried=retry.n, event=RETRY_EVENT)
