"""Logs when it runs, for tests and demos that check that two copies of a job never run at once.

Parameters: ``log``, a file outside the workdir that every copy of the job appends to;
``total`` steps (default 100); ``sleep`` seconds per step (default 0.05). A copy appends
``start <time> <pid>`` when it starts and ``alive <time> <pid>`` at each step, the time being
CLOCK_MONOTONIC (``time.monotonic()``, the same for every process of the machine). As in
:mod:`.loop`, ``acc`` accumulates the step numbers, so a wrongly resumed run ends with another
``result``.
"""
from __future__ import annotations

import os
import time

from dbdict_worker import COMPLETE, INCOMPLETE


def _line(path: str, what: str) -> None:
    with open(path, "a") as f:  # one short append: lines of copies never mix
        f.write(f"{what} {time.monotonic():.6f} {os.getpid()}\n")


def experiment(state, channel):
    """Count to ``total``, logging each step; return INCOMPLETE when asked to stop."""
    total = state.get("total", 100)
    pause = state.get("sleep", 0.05)
    state.setdefault("step", 0)
    state.setdefault("acc", 0)
    _line(state.log, "start")
    while state.step < total:
        state.step += 1
        state.acc += state.step
        _line(state.log, "alive")
        time.sleep(pause)
        if channel.save_and_switch() == "stop":
            return INCOMPLETE
    state.result = state.acc
    return COMPLETE


def copies(text: str) -> dict[int, tuple[float, float]]:
    """From a log's text: each copy's (pid's) first and last time."""
    out: dict[int, tuple[float, float]] = {}
    for line in text.splitlines():
        _, at, pid = line.split()
        first, last = out.get(int(pid), (float(at), float(at)))
        out[int(pid)] = (min(first, float(at)), max(last, float(at)))
    return out
