"""What the processes a job runs in are given, and how their end reads.

:func:`child_env` is the environment of the fork server and of every job process (never the
queue's credentials); :func:`describe_returncode` is the one spelling of a child's exit status,
for a job process that died without reporting and for a command experiment's program.
"""
from __future__ import annotations

import os
import signal
from typing import Mapping

#: Environment variables never passed to experiments: the queue's credentials, and systemd's
#: notification socket (only the worker itself talks to systemd).
SECRET_ENV = ("DBDICT_DB", "DBDICT_TEST_DSN", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without the queue's credentials (DBDICT_DB, PG*PASS*), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in SECRET_ENV and not (k.startswith("PG") and "PASS" in k)}
    env.update(extra or {})
    return env


def describe_returncode(rc: int) -> str:
    """"killed by signal 9 (SIGKILL)" or "exited with code 3"."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-rc} ({name})"
    return f"exited with code {rc}"
