"""Walltime-aware workers: book no more near the allocation's end, and stop the jobs in time.

A worker given a walltime (``dbdict-worker start --walltime 4h``, or under SLURM the job's end
time, :func:`slurm_end`) has a deadline. With less than ``min_remaining`` left it books no
more (it drains: running jobs go on, and it exits once they end). At ``grace + margin``
before the deadline it stops its jobs with the usual protocol (SIGTERM, the grace period,
SIGKILL), so that they save, are pushed back and are requeued (START, at once, uncounted:
they were stopped by the worker) before the scheduler kills the allocation; the worker then
exits 0. The margin leaves time for the last push and the database writes: 5% of the
walltime, between :data:`MIN_MARGIN` and :data:`MAX_MARGIN`.

Each job is told when it will be asked to stop (:meth:`Walltime.job_deadline`, an epoch in
the child's spec and in ``DBDICT_DEADLINE``): ``channel.time_left()``.
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
import time
from typing import Callable, Mapping

from dbdict_worker.durations import parse_duration
from dbdict_worker.errors import UsageError

log = logging.getLogger("dbdict_worker.worker")

#: The margin before the deadline kept for the last push and writes, as a part of the walltime,
MARGIN_FRACTION = 0.05
#: ... at least this many seconds,
MIN_MARGIN = 1.0
#: ... and at most this many.
MAX_MARGIN = 60.0
#: The default --min-remaining is this many seconds, or twice the grace when that is longer:
#: a job booked later would run for less than its setup and save are worth.
DEFAULT_MIN_REMAINING = 300.0
#: How long ``squeue`` may take to say when the SLURM job ends.
SQUEUE_TIMEOUT = 10.0
#: What squeue prints for a job without an end time.
_NO_END = ("", "n/a", "unknown", "none", "unlimited", "invalid")


def default_min_remaining(grace: float) -> float:
    """The default --min-remaining: ``max(DEFAULT_MIN_REMAINING, 2 * grace)`` seconds."""
    return max(DEFAULT_MIN_REMAINING, 2.0 * grace)


def margin_for(walltime: float) -> float:
    """Seconds kept after the jobs' kill for the last push and writes."""
    return min(MAX_MARGIN, max(MIN_MARGIN, MARGIN_FRACTION * walltime))


class Walltime:
    """The worker's deadline (``seconds`` from now; None: no limit), on ``clock``.

    ``may_book(now)``: more than ``min_remaining`` is left. ``stop_due(now)``: it is time to
    stop the jobs (``grace`` + the margin before the deadline). :meth:`tick` acts on both,
    once each.
    """

    def __init__(self, seconds: float | None, *, min_remaining: float | None = None,
                 grace: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._wall = wall
        now = clock()
        #: The allocation's end on ``clock`` (None: no limit).
        self.deadline = None if seconds is None else now + max(0.0, seconds)
        self.min_remaining = default_min_remaining(grace) if min_remaining is None \
            else min_remaining
        self.margin = margin_for(seconds) if seconds is not None else 0.0
        #: The jobs are asked to stop this long before the deadline.
        self.stop_before = grace + self.margin
        self._announced = self._draining = self._stopping = False

    @property
    def limited(self) -> bool:
        return self.deadline is not None

    @property
    def stop_at(self) -> float | None:
        """When (on ``clock``) the jobs are asked to stop; None without a limit."""
        return None if self.deadline is None else self.deadline - self.stop_before

    def time_left(self, now: float | None = None) -> float | None:
        """Seconds to the deadline (negative once past it); None without a limit."""
        if self.deadline is None:
            return None
        return self.deadline - (self.clock() if now is None else now)

    def may_book(self, now: float) -> bool:
        """Whether a job may be booked: at least ``min_remaining`` left, and no stop due."""
        left = self.time_left(now)
        return left is None or (left >= self.min_remaining and not self.stop_due(now))

    def stop_due(self, now: float) -> bool:
        """Whether the running jobs must be asked to stop now."""
        stop_at = self.stop_at
        return stop_at is not None and now >= stop_at

    def job_deadline(self, timeout: float | None = None) -> float | None:
        """The epoch (time.time()) at which a job starting now is asked to stop: the
        worker's stop time or, sooner, ``timeout`` seconds from now; None: neither."""
        now = self._wall()
        ends = [now + timeout] if timeout else []
        stop_at = self.stop_at
        if stop_at is not None:
            ends.append(now + (stop_at - self.clock()))
        return min(ends) if ends else None

    def tick(self, now: float, *, drain: Callable[[], None], stop: Callable[[], None]) -> None:
        """Announce the limit (the first time), then call ``drain`` once booking must end
        and ``stop`` once the jobs must be stopped (each once)."""
        left = self.time_left(now)
        if left is None:
            return
        if not self._announced:
            self._announced = True
            log.info("walltime: %s left; booking stops with %s left, jobs are stopped "
                     "with %s left (grace %s + margin %s)", format_duration(left),
                     format_duration(self.min_remaining), format_duration(self.stop_before),
                     format_duration(self.stop_before - self.margin),
                     format_duration(self.margin))
        if not self._draining and not self.may_book(now):
            self._draining = True
            log.info("walltime: %s left, booking no more", format_duration(max(0.0, left)))
            drain()
        if not self._stopping and self.stop_due(now):
            self._stopping = True
            log.info("walltime: stopping jobs to requeue them before the allocation ends "
                     "(%s left)", format_duration(max(0.0, left)))
            stop()


# --- SLURM ------------------------------------------------------------------------------------

def parse_squeue_time(text: str) -> float | None:
    """The epoch of squeue's ``%e`` (``2024-05-01T14:30:00``, local time); None when it
    names no end (``N/A``, ``Unknown``, ...). ValueError when it is not a time."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    if first.lower() in _NO_END:
        return None
    return datetime.datetime.fromisoformat(first).timestamp()


def slurm_end(env: Mapping[str, str] = os.environ) -> float | None:
    """The end (epoch) of the SLURM allocation this process runs in: ``SLURM_JOB_END_TIME``
    when set, else what ``squeue -j $SLURM_JOB_ID -o %e`` says. None outside SLURM, for a job
    without an end, or when it cannot be read (then with a warning)."""
    text = env.get("SLURM_JOB_END_TIME", "").strip()
    if text:
        try:
            end = float(text)
            return end if end > 0 else None
        except ValueError:
            log.warning("walltime: SLURM_JOB_END_TIME=%r is not an epoch; asking squeue", text)
    job = env.get("SLURM_JOB_ID", "").strip()
    if not job:
        return None
    argv = ["squeue", "-h", "-j", job, "-o", "%e"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0]
            raise OSError(why)
        return parse_squeue_time(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        log.warning("walltime: cannot read the end of SLURM job %s (%s: %s): no time limit "
                    "(give --walltime)", job, " ".join(argv), e)
        return None


def from_options(walltime: str | None, min_remaining: str | None,
                 env: Mapping[str, str] = os.environ,
                 wall: Callable[[], float] = time.time) -> tuple[float | None, float | None]:
    """``--walltime`` and ``--min-remaining`` (duration texts, or None) as the allocation's
    end (an epoch; None: no limit) and seconds (None: the default). --walltime counts from
    now and wins over the SLURM job's end, read when it is not given. UsageError (exit 2) for
    a malformed or non-positive duration."""
    least = None
    if min_remaining is not None and str(min_remaining).strip():
        least = _duration("--min-remaining", min_remaining)
    if walltime is not None and str(walltime).strip():
        seconds = _duration("--walltime", walltime)
        if seconds <= 0:
            raise UsageError(f"--walltime {walltime}: must be longer than 0s")
        return wall() + seconds, least
    end = slurm_end(env)
    if end is not None:
        log.info("walltime: SLURM job %s ends in %s", env.get("SLURM_JOB_ID", "?"),
                 format_duration(end - wall()))
    return end, least


def seconds_left(end: float | None, wall: Callable[[], float] = time.time) -> float | None:
    """Seconds from now to ``end`` (an epoch), or None for None."""
    return None if end is None else end - wall()


def _duration(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except (ValueError, UsageError) as e:
        raise UsageError(f"{option}: {e}") from None


def format_duration(seconds: float) -> str:
    """A duration for the log: ``3h59m57s``, ``4m5s``, ``45s``, ``2.5s`` (tenths under 10 s)."""
    if seconds < 10:
        return f"{round(max(0.0, seconds), 1):g}s"
    rest, out = int(round(seconds)), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        out += f"{n}{unit}" if n else ""
    return out


__all__ = ["Walltime", "default_min_remaining", "from_options", "margin_for",
           "parse_squeue_time", "seconds_left", "slurm_end"]
