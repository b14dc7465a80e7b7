"""This machine's own environment, as the starts of jobs find it: what a job needs before it
can start here (:func:`check`), and how failures of it pace and end the worker
(:class:`Health`). Such a failure is the worker's, not the job's: the job goes back to the
queue uncounted."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from dbdict_worker.backoff import doubling
from dbdict_worker.job.sync import ExpRoot
from dbdict_worker.job.workdir import EnvironmentFault, make_job_dir

#: Longest pause between bookings while the environment fails (the pause doubles up to it).
MAX_PAUSE = 300.0
#: Longest reason kept (it is shown in the worker's state).
MAX_REASON = 300


def check(workdir_base: Path, exproot: ExpRoot | None, local: Path,
          remote: ExpRoot | None) -> None:
    """Make the job's directories, or EnvironmentFault when this machine cannot (whichever
    the job), WorkdirError when the job's own path is the problem."""
    if remote is not None:
        if shutil.which("rsync") is None:
            raise EnvironmentFault("rsync is not installed (or not on PATH)")
        if exproot is not None and not exproot.is_remote and not os.path.isdir(exproot.path):
            # Never created here: a missing root is an unmounted file system, and jobs
            # written under an empty mount point would be hidden when it comes back.
            raise EnvironmentFault(f"exproot {exproot} does not exist (not mounted?)")
        if not remote.is_remote:
            make_job_dir(exproot.path if exproot is not None else workdir_base, remote.path)
    make_job_dir(workdir_base, local)


class Health:
    """Environment failures in a row, the last one's reason, and no booking until
    ``pause_until``: pauses of ``first_pause`` doubling, and after ``limit`` failures in a
    row the worker gives up."""

    def __init__(self, limit: int, first_pause: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.first_pause = first_pause
        self.clock = clock
        self.failures = 0
        self.reason: str | None = None
        self.pause_until = 0.0

    @property
    def paused(self) -> bool:
        return self.clock() < self.pause_until

    def failed(self, reason: str) -> float | None:
        """Count a failure: the pause before the next booking, or None to give up."""
        self.failures += 1
        self.reason = reason[:MAX_REASON]
        if self.failures >= self.limit:
            return None
        pause = doubling(self.failures, self.first_pause, MAX_PAUSE)
        self.pause_until = self.clock() + pause
        return pause

    def succeeded(self) -> bool:
        """A job could start: True when the environment had been failing."""
        was = self.reason is not None
        self.failures, self.reason = 0, None
        return was
