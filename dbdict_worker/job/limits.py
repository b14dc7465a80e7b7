"""An attempt's time limits, watched by its parent (:class:`~dbdict_worker.job.jobrun.JobRun`).

- ``timeout``: wall time since the job's process started. Past it, the job is stopped like
  any other (SIGTERM, the grace period, SIGKILL) and its outcome is ERR_RUN, "timeout after
  6h", whatever it returned after the SIGTERM (INCOMPLETE included: what it saved is kept, so
  a retry resumes from it); only a COMPLETE stands.
- ``stall_after``: the job is stalled when, for that long, it made no save, its workdir's
  stdout and stderr did not grow, and its process group used no CPU time (less than
  :data:`MIN_CPU_SHARE` of the time, and under :data:`MIN_CPU_SECONDS`: a thread that wakes
  now and then is not work). Handled like a timeout: "stalled: no save, output or CPU time
  for 15m". A group stopped by SIGSTOP (a paused lease) is not stalled.

The CPU time of a process group is read from ``/proc`` (Linux); where there is none, CPU time
cannot be seen and a job is never judged stalled. Both give ``Outcome.limit`` ("timeout" or
"stall"), which the worker's retries count as the class ``timeout``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from dbdict_worker.constants import Status
from dbdict_worker.durations import format_duration
from dbdict_worker.job.process import Outcome
from dbdict_worker.errors import DbdictError
from dbdict_worker.job.workdir import ERROR_KEY, STATUS_KEY, Workdir

log = logging.getLogger("dbdict_worker")

#: CPU time used since the last sign of life that counts as work: at least this share of
#: the time passed, and at least MIN_CPU_SECONDS (clock ticks are 10 ms).
MIN_CPU_SHARE = 0.01
MIN_CPU_SECONDS = 0.05
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu(pgid: int, proc: str = "/proc") -> tuple[float, bool] | None:
    """CPU seconds used by the live processes of group ``pgid`` (with their reaped children),
    and whether one of them is stopped (SIGSTOP); None when ``/proc`` cannot be read."""
    total = 0
    stopped = False
    try:
        entries = os.scandir(proc)
    except OSError:
        return None
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat"), "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            # After the command: state ppid pgrp ... utime(11) stime cutime cstime.
            if len(fields) < 15 or int(fields[2]) != pgid:
                continue
            stopped = stopped or fields[0] in (b"T", b"t")
            total += sum(int(x) for x in fields[11:15])
    return total / _TICK, stopped


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


class Limits:
    """Watches one attempt (process group ``pgid``, output files ``outputs``) for its
    ``timeout`` and ``stall_after`` (seconds, None: none). Call :meth:`hit` from the
    watching loop; :meth:`ended` turns the attempt's outcome into the limit's."""

    def __init__(self, pgid: int, outputs: Sequence[Path], *, timeout: float | None,
                 stall_after: float | None, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[int], tuple[float, bool] | None] = group_cpu) -> None:
        self.pgid = pgid
        self.outputs = list(outputs)
        self.timeout = timeout
        self.stall_after = stall_after
        self.clock = clock
        self.cpu = cpu
        #: (kind, message) once a limit was hit: "timeout" or "stall".
        self.fired: tuple[str, str] | None = None
        now = clock()
        self.started = now
        self._active_at = now
        self._sizes = [_size(p) for p in self.outputs]
        self._cpu_at_active: float | None = None
        # How often the files and the CPU time are looked at (the loop runs every 0.1 s).
        self._every = min(max((stall_after or 1.0) / 10, 0.2), 10.0)
        self._next_look = now

    @classmethod
    def for_job(cls, timeout: float | None, stall_after: float | None, pgid: int,
                workdir: Workdir) -> "Limits | None":
        """The watcher of a job with these limits, None when it has none."""
        if timeout is None and stall_after is None:
            return None
        return cls(pgid, [workdir.stdout, workdir.stderr], timeout=timeout,
                   stall_after=stall_after)

    def hit(self, active: bool) -> bool:
        """True, once, when a limit is reached (``active``: the job saved, or a push of its
        is under way, since the last call)."""
        if self.fired is not None:
            return False
        now = self.clock()
        if self.timeout is not None and now - self.started >= self.timeout:
            return self._fire("timeout", f"timeout after {format_duration(self.timeout)}")
        if self.stall_after is None:
            return False
        if active:
            self._active_at = now
        if now >= self._next_look or now - self._active_at >= self.stall_after:
            self._next_look = now + self._every
            self._look(now)
        if now - self._active_at >= self.stall_after:
            return self._fire("stall", "stalled: no save, output or CPU time for "
                              f"{format_duration(self.stall_after)}")
        return False

    def _look(self, now: float) -> None:
        sizes = [_size(p) for p in self.outputs]
        if sizes != self._sizes:
            self._sizes = sizes
            self._active_at = now
        seen = self.cpu(self.pgid)
        if seen is None:  # CPU time cannot be read here: never judge a job stalled
            self._active_at = now
            return
        cpu, stopped = seen
        if self._cpu_at_active is None or stopped:
            self._active_at = now if stopped else self._active_at
            self._cpu_at_active = cpu
            return
        used = cpu - self._cpu_at_active
        if used >= max(MIN_CPU_SECONDS, MIN_CPU_SHARE * (now - self._active_at)):
            self._active_at = now
        if self._active_at == now:
            self._cpu_at_active = cpu

    def _fire(self, kind: str, message: str) -> bool:
        self.fired = (kind, message)
        log.info("job process %d: %s: stopping it", self.pgid, message)
        return True

    def ended(self, outcome: Outcome, workdir: Workdir) -> Outcome:
        """The attempt's outcome once a limit stopped it: ERR_RUN with the limit's message
        and ``limit`` set (its state kept), unless it completed; ``outcome`` otherwise. The
        workdir's current.conf is updated to match (best effort)."""
        if self.fired is None or outcome.status == Status.DONE:
            return outcome
        kind, message = self.fired
        try:
            current = workdir.read_current()
            if current is not None:
                workdir.write_current({**current, STATUS_KEY: Status.ERR_RUN.name,
                                       ERROR_KEY: message})
        except (OSError, DbdictError) as e:
            log.warning("cannot update %s: %s", workdir.current_conf, e)
        return dataclasses.replace(outcome, status=Status.ERR_RUN, error=message, limit=kind)
