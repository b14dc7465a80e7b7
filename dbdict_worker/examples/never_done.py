"""An experiment that returns INCOMPLETE, for the bound on restarts.

Without parameters it never finishes: each run returns INCOMPLETE at once and changes nothing
(the bug of ``return True`` meant as success). A worker requeues it after a growing delay and,
past the job's ``max_restarts``, ends it ERR_RUN.

With ``runs`` (an int), each run saves progress (``done`` goes up by one) and returns
INCOMPLETE, until the ``runs``-th run, which returns COMPLETE: a job resumed from its
checkpoints as often as it needs, never bounded.

With ``until_stopped`` true, each run waits for 'stop' (the worker stopping) without
changing anything, then returns INCOMPLETE.

Each run appends ``run pid P`` to ``runs.log`` in the workdir.
"""
from __future__ import annotations

import os
import time

from dbdict_worker import COMPLETE, INCOMPLETE


def experiment(state, channel):
    """Return INCOMPLETE without progress, or with progress until ``runs`` (see the module)."""
    with open("runs.log", "a") as f:
        f.write(f"run pid {os.getpid()}\n")
    if state.get("until_stopped"):
        while channel.switch() != "stop":
            time.sleep(0.02)
        return INCOMPLETE
    if "runs" not in state:
        return INCOMPLETE
    state.done = state.get("done", 0) + 1
    if state.done >= state.runs:
        return COMPLETE
    channel.save()
    return INCOMPLETE
