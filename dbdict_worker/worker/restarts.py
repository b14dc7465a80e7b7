"""Restarts are bounded: what a worker does with a run that ended START (INCOMPLETE, stopped).

- **Stopped** (the worker asked the job to stop: SIGTERM, a stop, a kill after the grace):
  requeued at once, its count unchanged. The worker leaving is not the job's doing.
- **Progress**: the state it ended with differs from the state it was booked with (a save
  with new values, or new values returned with INCOMPLETE): requeued at once, the count back to
  0. That is a checkpoint, or a preemption the experiment handled itself.
- **No progress**: the count (``jobs.restarts``) goes up by one. Up to the job's
  ``max_restarts`` (``dbdict-enqueue --max-restarts``, default
  :data:`~dbdict_worker.constants.DEFAULT_MAX_RESTARTS`) it is requeued with ``not_before`` =
  now + :func:`restart_delay`; one more and it ends ERR_RUN, "returned INCOMPLETE N times in
  a row without saving progress".

Progress is judged on the job's parameters and results as stored (the same canonical text as
the parameter hash: 1, 1.0 and True differ, NaN equals NaN); files the experiment wrote in
its workdir are not looked at.
"""
from __future__ import annotations

import dataclasses
import os
import random
from typing import Any, Callable, Mapping

from dbdict_worker.backoff import doubling
from dbdict_worker.constants import Status
from dbdict_worker.errors import UsageError
from dbdict_worker.job.process import Outcome
from dbdict_worker.state import canonical_json, user_keys
from dbdict_worker.store import Booking

#: The first delay after an INCOMPLETE without progress (seconds); each next one doubles.
DEFAULT_DELAY_BASE = 5.0
#: The environment variable that sets the base (tests, tuning): DBDICT_RESTART_DELAY_BASE=0.2.
DELAY_BASE_ENV = "DBDICT_RESTART_DELAY_BASE"
#: The delay stops growing at this many times the base (5 s: 300 s).
DELAY_CAP_FACTOR = 60
#: Each delay is scaled by a random factor in 1 ± JITTER, so that jobs that fail together do
#: not all come back at the same instant. Below 1/3, each delay is still longer than the last.
JITTER = 0.2


@dataclasses.dataclass(frozen=True)
class Restart:
    """How a START run goes back to the queue: after ``delay`` seconds (0: at once), with
    ``restarts`` as its new count (None: unchanged), ``retried`` as its new count of retries
    used (None: unchanged; :mod:`.retries`); ``reason`` and ``event`` (the kind) for its
    event."""

    delay: float = 0.0
    restarts: int | None = None
    reason: str | None = None
    retried: int | None = None
    event: str = "requeued"


def delay_base_from_env() -> float:
    """The base delay: :data:`DELAY_BASE_ENV` when set to a number >= 0, else the default."""
    text = os.environ.get(DELAY_BASE_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_DELAY_BASE
    except ValueError:
        raise UsageError(f"{DELAY_BASE_ENV}={text!r}: expected seconds, e.g. 5 or 0.2") from None
    if not 0 <= value < float("inf"):
        raise UsageError(f"{DELAY_BASE_ENV}={text!r}: expected seconds >= 0")
    return value


def restart_delay(n: int, base: float, rand: Callable[[], float] = random.random) -> float:
    """The delay before the ``n``-th restart in a row without progress (n >= 1):
    ``min(base * 2**(n-1), base * DELAY_CAP_FACTOR)``, times a jitter in 1 ± JITTER."""
    return doubling(n, base, base * DELAY_CAP_FACTOR, jitter=JITTER, rand=rand)


def made_progress(booked: Mapping[str, Any], ended: Mapping[str, Any]) -> bool:
    """Whether the user state a run ended with differs from the one it was booked with."""
    return canonical_json(user_keys(booked)) != canonical_json(user_keys(ended))


def after_run(booking: Booking, outcome: Outcome, base: float) -> tuple[Outcome, Restart]:
    """The outcome to write (a START without progress past the limit becomes ERR_RUN) and,
    for START, how it is requeued; see the module docstring."""
    if outcome.status != Status.START:
        return outcome, Restart()
    if outcome.stopped:
        return outcome, Restart()
    if made_progress(booking.state, outcome.state):
        return outcome, Restart(restarts=0)
    job = booking.job
    n = job.restarts + 1
    if n > job.max_restarts:
        why = (f"returned INCOMPLETE {n} times in a row without saving progress "
               f"(max_restarts {job.max_restarts})")
        return dataclasses.replace(outcome, status=Status.ERR_RUN, error=why), Restart()
    return outcome, Restart(restart_delay(n, base), n,
                            f"INCOMPLETE without new progress (restart {n} of at most "
                            f"{job.max_restarts})")
