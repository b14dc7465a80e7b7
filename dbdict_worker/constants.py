"""Statuses, priorities and exit codes shared by the queue and the job runtime (the README's
"Statuses" section); the status numbers are kept from the 2008 original."""
from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """A job's status. The number is what the ``jobs.status`` column stores."""

    CANCELED = -1
    START = 0
    RUNNING = 1
    DONE = 2
    ERR_START = 3
    ERR_SYNC = 4
    ERR_RUN = 5
    #: Stopped early by a search's pruner; its state and files are kept (terminal, like DONE).
    PRUNED = 6

    @classmethod
    def parse(cls, text: str | int) -> "Status":
        """Accept a name (any case) or a number; raise ValueError naming the choices."""
        if isinstance(text, int):
            return cls(text)
        t = str(text).strip()
        try:
            return cls(int(t))
        except ValueError:
            pass
        try:
            return cls[t.upper()]
        except KeyError:
            names = ", ".join(s.name for s in cls)
            raise ValueError(f"unknown status {text!r} (one of: {names})") from None


#: Statuses of a job that has not ended.
PENDING = (Status.START, Status.RUNNING)
#: Statuses of a job that ended failed.
FAILED = (Status.ERR_START, Status.ERR_SYNC, Status.ERR_RUN)
#: Statuses of a job that ended as meant: DONE, or PRUNED (a search's pruner stopped it early
#: on purpose; its state and files are kept).
SUCCEEDED = (Status.DONE, Status.PRUNED)
#: Statuses a job ends in (it runs again only if requeued).
ENDED = (*SUCCEEDED, *FAILED, Status.CANCELED)
#: The order commands and pages show statuses in: the way a sweep goes through them.
SHOWN_ORDER = (*PENDING, *SUCCEEDED, *FAILED, Status.CANCELED)

#: What an experiment returns when it is done (None means the same).
COMPLETE = None
#: What an experiment returns when it stopped early and wants to be resumed.
INCOMPLETE = True

DEFAULT_PRIORITY = 1.0
#: Priority given to jobs that come back (INCOMPLETE, stopped, lost), so resumed work goes first.
RESTART_PRIORITY = 2.0
DEFAULT_MAX_ATTEMPTS = 3
#: How many times in a row a job may come back INCOMPLETE without saving progress before it
#: ends ERR_RUN (each such comeback waits longer first: worker/restarts.py).
DEFAULT_MAX_RESTARTS = 20
DEFAULT_TABLE = "default"
#: The most jobs one ``dbdict-enqueue`` makes without ``--yes`` (counted before any is made:
#: a sweep with one factor too many can ask for 10^9).
MAX_ENQUEUE_JOBS = 10_000_000
#: Prefix of the keys the system owns; users cannot enqueue them.
RESERVED_PREFIX = "dbdict"
#: Exit status for INCOMPLETE: of ``dbdict run`` (the same command resumes the job) and of a
#: command experiment's program. EX_TEMPFAIL in sysexits.h: "try again later".
EXIT_INCOMPLETE = 75
#: Exit status of a worker whose own machine kept failing to start jobs (workdir base
#: unwritable or full, exproot missing, rsync missing): the jobs went back to the queue
#: uncounted; another machine, or this one once repaired, runs them.
EXIT_ENVIRONMENT = 3

#: The failure classes ``dbdict-enqueue --retry-on`` can name. error: the experiment raised
#: or its process died (ERR_RUN); lost: its worker vanished (the lease ran out); timeout: it
#: passed ``--timeout`` or hung past ``--stall-after``; sync: its workdir could not be copied
#: back (ERR_SYNC).
RETRY_CLASSES = ("error", "lost", "timeout", "sync")
#: The first delay before a retry when ``--retry-delay`` is not given (seconds).
DEFAULT_RETRY_DELAY = 60.0
