"""A job's child started as a new interpreter (:class:`PopenChild`, what
:class:`~dbdict_worker.job.forkserver.ForkedChild` mirrors), and the process-group helpers
:class:`~dbdict_worker.job.process.JobProcess` uses."""
from __future__ import annotations

import os
import signal
import subprocess
import time


class PopenChild:
    """A job process started as a new interpreter (what :class:`ForkedChild` mirrors)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.pid = proc.pid
        self._proc = proc

    def wait_exited(self) -> None:
        """Block until the process has exited, without reaping it."""
        _wait_exited(self._proc)

    def reap_group(self) -> int:
        """Kill what the process left in its group, then reap it; its exit status."""
        # The exited leader is still a zombie, so its pid (our group id) cannot have been
        # reused yet.
        _killpg(self.pid, signal.SIGKILL)
        return self._proc.wait()


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_stopped(pid: int) -> bool:
    """Whether process ``pid`` (the leader of a job's group) is stopped; True when that cannot
    be read (a needless SIGCONT does no harm)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return True


def _wait_exited(proc: subprocess.Popen) -> None:
    """Block until ``proc`` has exited, without reaping it (waitid with WNOWAIT)."""
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        while True:
            try:
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
                return
            except InterruptedError:
                continue
            except ChildProcessError:
                return
    # No waitid: poll (the group kill that follows then has a tiny pid-reuse window).
    while proc.poll() is None:
        time.sleep(0.05)
