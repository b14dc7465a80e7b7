"""The job's own lease watchdog, a thread in the job's child: a job never runs past the lease
its worker could renew.

After each heartbeat that renewed the job's lease, the worker sends a ``renewed`` message
(:mod:`.messages`) with a deadline on CLOCK_MONOTONIC, which is system-wide on Linux, so the
parent's deadline means the same here. When it passes without a newer one (the worker is
frozen, cut off from the database, or the database is down), the watchdog stops the job's
whole process group with SIGSTOP: itself, the experiment and the programs it started. The
worker SIGCONTs the group once it has renewed the lease again, or kills it when the job is no
longer its own; resumed without a newer deadline, the group stops again.

The pause is done here, not by the worker, because a frozen worker cannot act. A worker that
went away (the socket's end of file) can neither resume nor kill the job: it is asked to stop,
and killed at the deadline if it is still running.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import Callable

from dbdict_worker.job import messages

#: How long the watchdog waits for the stop it asked for to reach itself (seconds).
STOP_WAIT = 0.2


class Watchdog:
    """Stops this process's group when the lease deadline ``until`` (None: none yet) passes
    without a renewal read from ``fd``; ``on_orphaned`` is called once when the worker's end
    of ``fd`` closes. It is the one reader of ``fd``: the parent's other messages (a push's
    answer) go to ``on_message``, in this thread."""

    def __init__(self, fd: int, until: float | None, *,
                 on_orphaned: Callable[[], None],
                 on_message: Callable[[dict], None] = lambda message: None) -> None:
        # Our own descriptor: the main thread closes ``fd`` when the experiment returns.
        self._sock = socket.socket(fileno=os.dup(fd))
        self.until = until
        self.on_orphaned = on_orphaned
        self.on_message = on_message
        self.orphaned = False
        self._buffer = messages.LineBuffer()
        self._told: float | None = None

    def start(self) -> None:
        threading.Thread(target=self._loop, name="dbdict-lease-watchdog", daemon=True).start()

    def _loop(self) -> None:
        while not self.orphaned:
            self._read(self._remaining())
            if self._remaining() == 0.0:
                self._stop_group()
        self.on_orphaned()
        if self.until is not None:
            time.sleep(self._remaining())
            _signal_group(signal.SIGKILL)

    def _remaining(self) -> float | None:
        return None if self.until is None else max(0.0, self.until - time.monotonic())

    def _read(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` for messages, then take every one already there."""
        self._sock.settimeout(timeout)
        while True:
            try:
                chunk = self._sock.recv(4096)
            except (socket.timeout, BlockingIOError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.orphaned = True
                return
            for message in self._buffer.feed(chunk):
                if message["kind"] == messages.RENEWED:
                    try:
                        self.until = float(message["until"])
                    except (KeyError, TypeError, ValueError):
                        pass
                else:
                    self.on_message(message)
            self._sock.settimeout(0.0)  # and the rest, without waiting

    def _stop_group(self) -> None:
        if self._told != self.until:
            self._told = self.until
            sys.stderr.write("dbdict: the worker could not renew this job's lease: the job is "
                             "paused until it does\n")
            sys.stderr.flush()
        if _signal_group(signal.SIGSTOP):
            # The stop reaches this thread a moment later: wait for it here, so that once
            # resumed it reads the renewal that came meanwhile before deciding anything. (Were
            # the stop slower than that, the worker's next renewal resumes the group again.)
            time.sleep(STOP_WAIT)


def _signal_group(sig: int) -> bool:
    # Only as the leader of the job's own group (both ways of starting a job make it one): a
    # runner started some other way must never stop or kill the group it happens to be in.
    if os.getpgrp() != os.getpid():
        return False
    os.killpg(os.getpgrp(), sig)
    return True


def start(fd: int, until: float | None, *, on_orphaned: Callable[[], None],
          on_message: Callable[[dict], None] = lambda message: None) -> Watchdog:
    """Start the watchdog of this job process (see the module docstring)."""
    watchdog = Watchdog(fd, until, on_orphaned=on_orphaned, on_message=on_message)
    watchdog.start()
    return watchdog
